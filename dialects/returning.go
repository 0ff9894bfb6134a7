package dialects

// SQLWriter is what a dialect writes part of a statement into: the
// statement builder of the caller (GORM's, in gormoutbox), which writes
// the caller's parts itself, with their bind variables.
type SQLWriter interface {
	WriteString(s string) (int, error)
}

// UpdateReturner is implemented by a dialect whose UPDATE returns the rows
// it wrote (PostgreSQL's UPDATE … RETURNING). Capture then writes an update
// by condition as one statement that locks the matching rows in key
// order, refuses to write when more than a limit match, writes them and
// returns them as written, in key order: no locking read before the write
// and no read after it. A dialect without it (MariaDB has no UPDATE …
// RETURNING) is captured with a locking read and a read after the write.
type UpdateReturner interface {
	// WriteUpdateReturning writes one part of such a statement into p.W;
	// the caller writes the UPDATE itself between PartLock and PartReturn,
	// with PartRestrict among the conditions of its WHERE.
	WriteUpdateReturning(part ReturningPart, p ReturningUpdate)
}

// ReturningPart names a part of an update that returns its rows.
type ReturningPart int

const (
	// PartLock comes before the UPDATE: it locks, in key order, at most
	// Limit+1 of the rows of Table that Where matches.
	PartLock ReturningPart = iota
	// PartRestrict is a condition of the UPDATE's WHERE: no more than
	// Limit rows were locked (taken before the UPDATE writes any row).
	PartRestrict
	// PartReturn comes after the UPDATE: the rows written, every column,
	// in key order. With Plain, the rows written in no particular order
	// (an UPDATE restricted to keys locked by the caller, without
	// PartLock or PartRestrict).
	PartReturn
)

// ReturningUpdate describes an update that returns its rows.
type ReturningUpdate struct {
	// W receives the SQL.
	W SQLWriter
	// Table writes the table updated (quoted, as the UPDATE names it).
	Table func()
	// Where writes the condition the UPDATE matches rows by (without the
	// WHERE keyword); nil when it matches every row.
	Where func()
	// Keys are the primary-key columns of Table (not quoted).
	Keys []string
	// Limit is the most rows the update may write: when more match, it
	// writes none (and returns none).
	Limit int
	// Plain: PartReturn alone, after an UPDATE the caller restricted.
	Plain bool
}
