package integration

import (
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
)

// fakeDialector stands for a database the outbox does not support (SQLite),
// without needing its driver: only its name matters to the plugin.
type fakeDialector struct{ name string }

func (d fakeDialector) Name() string                                      { return d.name }
func (fakeDialector) Initialize(*gorm.DB) error                           { return nil }
func (fakeDialector) Migrator(*gorm.DB) gorm.Migrator                     { return nil }
func (fakeDialector) DataTypeOf(*schema.Field) string                     { return "" }
func (fakeDialector) DefaultValueOf(*schema.Field) clause.Expression      { return clause.Expr{} }
func (fakeDialector) BindVarTo(w clause.Writer, _ *gorm.Statement, _ any) { _ = w.WriteByte('?') }
func (fakeDialector) QuoteTo(w clause.Writer, s string)                   { _, _ = w.WriteString(s) }
func (fakeDialector) Explain(sql string, _ ...any) string                 { return sql }
