package gormoutbox

import (
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

const skipClauseName = "gormoutbox:skip"

// Skip turns capture off for one statement, for deliberate bulk work whose
// events you publish another way (or not at all):
//
//	db.Clauses(gormoutbox.Skip("backfill of legacy stock")).Create(&rows)
//
// The reason is required, so that every write without events is explicit
// and visible in code review.
func Skip(reason string) clause.Expression { return skip{reason: reason} }

type skip struct{ reason string }

// Build implements clause.Expression; Skip adds nothing to the SQL.
func (skip) Build(clause.Builder) {}

// ModifyStatement implements gorm.StatementModifier.
func (s skip) ModifyStatement(stmt *gorm.Statement) {
	stmt.Clauses[skipClauseName] = clause.Clause{Name: skipClauseName, Expression: s}
}

func skipped(stmt *gorm.Statement) (reason string, ok bool) {
	c, ok := stmt.Clauses[skipClauseName]
	if !ok {
		return "", false
	}
	s, _ := c.Expression.(skip)
	return s.reason, true
}
