package gormoutbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"

	"github.com/go-outbox/outbox/dialects"
)

// How capture works, per GORM statement on a tagged model:
//
//	begin    (after gorm:begin_transaction)   check the write can be captured;
//	                                          open a transaction if GORM did not
//	prepare  (just before the SQL runs)       lock and read what the write will
//	                                          touch, where the after-image alone
//	                                          cannot tell (deletes, soft deletes,
//	                                          upserts)
//	capture  (just after the SQL ran)         read the after-image, build one
//	                                          event per entity, INSERT them
//	end      (after gorm:commit_or_rollback)  commit or roll back the
//	                                          transaction begin opened
//
// Every read and write goes through Statement.ConnPool, the statement's own
// transaction.

type stateKey struct{ stmt *gorm.Statement }

// stmtState is what one statement's callbacks share.
type stmtState struct {
	m         *model
	op        op
	startedTx bool
	// keys are the primary keys the write targets, in statement order.
	keys [][]any
	// live are the rows, keyed by keyString, that existed (and, on a
	// soft-delete model, were not deleted) before the write, read under
	// a row lock by prepare; nil when prepare had nothing to do.
	live map[string]reflect.Value
	// upsert: a Create with an ON CONFLICT clause; doNothing: its DO
	// NOTHING form; conflict: the fields of its conflict target when that
	// is not the primary key (keys then holds their values, and live is
	// keyed by them).
	upsert, doNothing bool
	conflict          []*schema.Field
	// byCondition: an update or delete by condition (Where, inline
	// conditions, AllowGlobalUpdate). prepare locks the matching rows,
	// restricts the write to them, and fills keys and live.
	byCondition bool
	// wrote: outbox rows were inserted (for the wake-up after commit).
	wrote bool
	// schemaless: a write through db.Table("t") without a model, to the
	// table of m; GORM applies none of the model's scopes.
	schemaless bool
	// maps: a create from this many maps (captureMapCreate); mixedKeys:
	// MySQL gives their generated keys wrongly (see mixedKeys).
	maps      int
	mixedKeys bool
	// preKeys: of an upsert on the primary key, each row's key before the
	// write ("" when it had none), to see RETURNING change it (MariaDB
	// reports the row another unique key conflicted with).
	preKeys []string
}

// MaxConditionRows bounds the rows one update or delete by condition may
// touch: prepare locks and reads them all, and restricts the write to their
// primary keys (one bind variable per key column per row). A write that
// matches more is refused with ErrUncapturedWrite; split it.
const MaxConditionRows = 20000

// softScoped reports whether GORM applies the model's soft-delete scope to
// the statement (a delete then sets deleted_at).
func (st *stmtState) softScoped(stmt *gorm.Statement) bool {
	return st.m.softDelete && !stmt.Unscoped && !st.schemaless
}

func stateOf(db *gorm.DB) *stmtState {
	v, ok := db.Statement.Settings.Load(stateKey{db.Statement})
	if !ok {
		return nil
	}
	return v.(*stmtState)
}

func (p *Plugin) register(db *gorm.DB) error {
	cb := db.Callback()
	c, u, d := cb.Create(), cb.Update(), cb.Delete()
	return errors.Join(
		c.After("gorm:begin_transaction").Before("gorm:before_create").
			Register("gormoutbox:begin_create", p.begin(opCreate)),
		c.After("gorm:save_before_associations").Before("gorm:create").
			Register("gormoutbox:prepare_create", p.prepare),
		c.After("gorm:create").Before("gorm:save_after_associations").
			Register("gormoutbox:capture_create", p.captureCreate),
		c.After("gorm:commit_or_rollback_transaction").
			Register("gormoutbox:end_create", p.end),

		u.After("gorm:begin_transaction").Before("gorm:before_update").
			Register("gormoutbox:begin_update", p.begin(opUpdate)),
		u.After("gorm:save_before_associations").Before("gorm:update").
			Register("gormoutbox:prepare_update", p.prepare),
		u.After("gorm:update").Before("gorm:save_after_associations").
			Register("gormoutbox:capture_update", p.captureUpdate),
		u.After("gorm:commit_or_rollback_transaction").
			Register("gormoutbox:end_update", p.end),

		d.After("gorm:begin_transaction").Before("gorm:before_delete").
			Register("gormoutbox:begin_delete", p.begin(opDelete)),
		d.After("gorm:delete_before_associations").Before("gorm:delete").
			Register("gormoutbox:prepare_delete", p.prepare),
		d.After("gorm:delete").Before("gorm:after_delete").
			Register("gormoutbox:capture_delete", p.captureDelete),
		d.After("gorm:commit_or_rollback_transaction").
			Register("gormoutbox:end_delete", p.end),
	)
}

func uncaptured(model string, o op, why, wayOut string) error {
	return fmt.Errorf("%w: %s of %s %s; %s, or opt out explicitly with db.Clauses(gormoutbox.Skip(\"reason\"))",
		ErrUncapturedWrite, o, model, why, wayOut)
}

// begin decides whether the statement is captured, refuses writes that
// cannot be, and makes sure the statement runs in a transaction.
func (p *Plugin) begin(o op) func(*gorm.DB) {
	return func(db *gorm.DB) {
		stmt := db.Statement
		if db.Error != nil || stmt.DryRun {
			return
		}
		if reason, ok := skipped(stmt); ok {
			if strings.TrimSpace(reason) == "" {
				_ = db.AddError(fmt.Errorf("%w: gormoutbox.Skip needs a reason, for the code reviewer", ErrInvalidConfig))
			}
			return
		}
		var m *model
		schemaless := stmt.Schema == nil
		if schemaless {
			// A write without a model, e.g. db.Table("inventories").Create(map...):
			// a write of the tagged model whose table it is, if any.
			var err error
			if m, err = p.schemalessModel(db, o); err != nil {
				_ = db.AddError(err)
				return
			}
			if m == nil {
				return // not a source's table: not the plugin's business
			}
		} else {
			var err error
			if m, err = p.models.lookup(stmt.Schema); err != nil {
				_ = db.AddError(err)
				return
			}
			if m == nil {
				// An untagged model pointed at a tagged model's table with
				// db.Table("members"): its rows would change without events.
				// (A second model whose own TableName is that table is not
				// refused: GORM's own suite writes one, whose key it cannot
				// even read back; README, "Not captured".)
				if tagged := p.models.byTable(stmt.Table); tagged != nil && stmt.Table != stmt.Schema.Table {
					_ = db.AddError(uncaptured(tagged.name, o, "through an untagged model "+stmt.Schema.Name+" on its table "+stmt.Table,
						"write through the tagged model, or tag "+stmt.Schema.Name+" too"))
				}
				return
			}
		}
		if m.ops&o == 0 {
			return
		}
		st := &stmtState{m: m, op: o, schemaless: schemaless}
		ok, err := p.plan(db, st)
		if err != nil {
			_ = db.AddError(err)
			return
		}
		if !ok {
			return // GORM itself refuses this statement (e.g. no WHERE)
		}
		if !inTransaction(stmt.ConnPool) {
			// GORM opens no transaction under SkipDefaultTransaction: open
			// one so that the entity write and its event stay atomic.
			tx := db.Begin()
			if tx.Error != nil {
				_ = db.AddError(fmt.Errorf("gormoutbox: open a transaction for the %s of %s: %w", o, m.name, tx.Error))
				return
			}
			stmt.ConnPool = tx.Statement.ConnPool
			st.startedTx = true
		}
		stmt.Settings.Store(stateKey{stmt}, st)
	}
}

// plan checks that the statement is one the plugin captures. It returns
// false, nil for statements GORM will refuse by itself.
func (p *Plugin) plan(db *gorm.DB, st *stmtState) (bool, error) {
	stmt, m := db.Statement, st.m
	if st.op == opCreate {
		if rv := stmt.ReflectValue; rv.IsValid() && (rv.Kind() == reflect.Slice || rv.Kind() == reflect.Array) && rv.Len() == 0 {
			return false, nil // GORM refuses it with ErrEmptySlice
		}
		if maps, ok := createMaps(stmt.Dest); ok {
			return p.planMapCreate(db, st, maps)
		}
	}
	if st.schemaless && st.op != opCreate {
		// db.Table("t").Where(...).Update(...) / Delete(...): by condition,
		// and without the model's scopes, as GORM runs it.
		if !hasWhere(stmt) && !stmt.AllowGlobalUpdate {
			return false, nil // GORM refuses it with ErrMissingWhereClause
		}
		st.byCondition = true
		return true, nil
	}
	if st.op == opCreate && !isEntityValue(stmt.ReflectValue) {
		if rv := stmt.ReflectValue; rv.IsValid() && (rv.Kind() == reflect.Slice || rv.Kind() == reflect.Array) &&
			rv.Type().Elem().Kind() == reflect.Interface {
			return false, uncaptured(m.name, st.op, "from a "+rv.Type().String(),
				"pass the model struct (or a slice of them)")
		}
		return false, nil // not something GORM creates rows from: it fails with its own error
	}
	if st.op == opCreate {
		if err := refuseInsertIgnore(stmt, m, st.op); err != nil {
			return false, err
		}
		if c, ok := stmt.Clauses["ON CONFLICT"]; ok {
			oc, _ := c.Expression.(clause.OnConflict)
			st.upsert, st.doNothing = true, oc.DoNothing
			if conflictOnPrimaryKey(oc, m) {
				// Rows without a primary key value cannot conflict on it:
				// they are inserted. The others may exist; prepare reads them.
				for _, e := range entities(stmt.ReflectValue) {
					k, ok := m.writtenKeyOf(stmt.Context, e)
					if ok {
						st.keys = append(st.keys, k)
						st.preKeys = append(st.preKeys, keyString(k))
					} else {
						st.preKeys = append(st.preKeys, "")
					}
				}
				return true, nil
			}
			// A conflict target of other columns (a unique key, say the
			// SKU): every row may exist; prepare reads them by it.
			for _, col := range oc.Columns {
				f := m.schema.LookUpField(col.Name)
				if f == nil || f.DBName == "" {
					return false, uncaptured(m.name, st.op, "as an upsert (clause.OnConflict) on column "+col.Name+", which is not a field of the model",
						"upsert on the model's columns")
				}
				st.conflict = append(st.conflict, f)
			}
			for _, e := range entities(stmt.ReflectValue) {
				st.keys = append(st.keys, fieldValues(stmt.Context, st.conflict, e))
			}
		}
		return true, nil
	}
	// Update and delete. Of loaded entities identified by primary key, the
	// keys are known now; by condition, prepare finds the rows.
	hasWhere := hasWhere(stmt)
	var keys [][]any
	complete := false
	if isEntityValue(stmt.ReflectValue) {
		keys, complete = m.keysOf(stmt.Context, entities(stmt.ReflectValue))
	}
	complete = complete && len(keys) > 0
	switch {
	case complete && !hasWhere:
		st.keys = keys
	case !complete && !hasWhere && !stmt.AllowGlobalUpdate:
		return false, nil // GORM refuses it with ErrMissingWhereClause
	default:
		st.byCondition = true
		if complete {
			st.keys = keys // GORM adds them to the WHERE; so does prepare
		}
	}
	return true, nil
}

// lockMatching reads, FOR UPDATE and in primary-key order, the rows a write
// by condition is about to touch, and restricts the write to them: the
// statement's WHERE, the primary keys of the model value when it has them,
// and the soft-delete scope unless Unscoped. Restricting the write to the
// locked keys matters on PostgreSQL, where at READ COMMITTED the write's
// own WHERE could also match a row committed after the read.
func (p *Plugin) lockMatching(db *gorm.DB, st *stmtState) error {
	stmt, m := db.Statement, st.m
	var exprs []clause.Expression
	if c, ok := stmt.Clauses["WHERE"]; ok {
		if w, ok := c.Expression.(clause.Where); ok {
			exprs = append(exprs, w.Exprs...)
		}
	}
	if len(st.keys) > 0 {
		col, vals := schema.ToQueryValues(clause.CurrentTable, m.pkDBNames, st.keys)
		exprs = append(exprs, clause.IN{Column: col, Values: vals})
	}
	read := rowRead{exprs: exprs, scoped: st.softScoped(stmt), lock: true, limit: MaxConditionRows + 1}
	if st.op == opUpdate {
		read.from = updateFrom(stmt)
	}
	limited := false
	if n, ok := writeLimit(stmt); ok && n == 0 {
		read.exprs = append(read.exprs, clause.Expr{SQL: "1 = 0"}) // LIMIT 0 touches nothing
	} else if ok && n <= MaxConditionRows {
		// MySQL's UPDATE/DELETE … [ORDER BY …] LIMIT n: lock the n rows it
		// will touch, in its order; restricted to them, it touches them all.
		read.limit, limited = n, true
		if c, ok := stmt.Clauses["ORDER BY"]; ok && slices.Contains(stmt.BuildClauses, "ORDER BY") {
			if ob, ok := c.Expression.(clause.OrderBy); ok {
				read.orderBy = &ob
			}
		}
	}
	rows, order, err := p.selectRows(db, m, read)
	if err != nil {
		return err
	}
	if !limited && len(order) > MaxConditionRows {
		return uncaptured(m.name, st.op, fmt.Sprintf("by condition matching more than %d rows", MaxConditionRows),
			"split the write into smaller ones (by key range, say)")
	}
	st.keys, st.live = order, rows
	if len(order) == 0 {
		// Nothing matches: the write must touch nothing either.
		stmt.AddClause(clause.Where{Exprs: []clause.Expression{clause.Expr{SQL: "1 = 0"}}})
		return nil
	}
	col, vals := schema.ToQueryValues(clause.CurrentTable, m.pkDBNames, order)
	stmt.AddClause(clause.Where{Exprs: []clause.Expression{clause.IN{Column: col, Values: vals}}})
	return nil
}

func refuseInsertIgnore(stmt *gorm.Statement, m *model, o op) error {
	if c, ok := stmt.Clauses["INSERT"]; ok {
		if ins, ok := c.Expression.(clause.Insert); ok && strings.Contains(strings.ToUpper(ins.Modifier), "IGNORE") {
			return uncaptured(m.name, o, "with INSERT "+ins.Modifier+" (the rows skipped cannot be told apart)",
				"use clause.OnConflict{DoNothing: true} on a single row")
		}
	}
	return nil
}

// rowRead is what selectRows reads: the rows matching exprs (and the
// soft-delete scope when scoped), FOR UPDATE when lock; limit > 0 reads
// them in order (orderBy, then the key) and at most limit of them; by are
// the fields the rows are keyed by (default the primary key); from holds
// the other tables of an UPDATE … FROM.
type rowRead struct {
	exprs        []clause.Expression
	scoped, lock bool
	limit        int
	by           []*schema.Field
	from         *clause.From
	orderBy      *clause.OrderBy
}

// writeLimit returns the LIMIT of an update or delete whose dialect writes
// it (MySQL), and whether there is one.
func writeLimit(stmt *gorm.Statement) (int, bool) {
	c, ok := stmt.Clauses["LIMIT"]
	if !ok || !slices.Contains(stmt.BuildClauses, "LIMIT") {
		return 0, false
	}
	l, ok := c.Expression.(clause.Limit)
	if !ok || l.Limit == nil || *l.Limit < 0 {
		return 0, false
	}
	return *l.Limit, true
}

// updateFrom returns the FROM clause of an UPDATE … FROM, or nil.
func updateFrom(stmt *gorm.Statement) *clause.From {
	c, ok := stmt.Clauses["FROM"]
	if !ok || !slices.Contains(stmt.BuildClauses, "FROM") {
		return nil
	}
	f, ok := c.Expression.(clause.From)
	if !ok || (len(f.Tables) == 0 && len(f.Joins) == 0) {
		return nil
	}
	return &f
}

func hasWhere(stmt *gorm.Statement) bool {
	if c, ok := stmt.Clauses["WHERE"]; ok {
		if w, ok := c.Expression.(clause.Where); ok && len(w.Exprs) > 0 {
			return true
		}
	}
	return false
}

func conflictOnPrimaryKey(oc clause.OnConflict, m *model) bool {
	if len(oc.Columns) == 0 {
		return true // GORM uses the primary key
	}
	if len(oc.Columns) != len(m.pkDBNames) {
		return false
	}
	for _, c := range oc.Columns {
		found := false
		for _, n := range m.pkDBNames {
			if c.Name == n {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// prepare reads, under a row lock, the rows the write is about to touch
// where the after-image alone cannot tell what the write did: the
// before-image of a hard delete, the live rows a soft delete or an update
// of a soft-delete model will match, and whether an upsert's row exists.
func (p *Plugin) prepare(db *gorm.DB) {
	st := stateOf(db)
	if st == nil || db.Error != nil {
		return
	}
	stmt := db.Statement
	if st.byCondition {
		if err := p.lockMatching(db, st); err != nil {
			_ = db.AddError(fmt.Errorf("gormoutbox: %s of %s: %w", st.op, st.m.name, err))
		}
		return
	}
	var scoped bool
	switch {
	case st.upsert:
		if len(st.keys) == 0 {
			return // every row is new
		}
		scoped = false // a conflict happens whether or not the row is soft-deleted
	case st.op == opDelete:
		scoped = !stmt.Unscoped && !st.schemaless
	case st.op == opUpdate && st.softScoped(stmt):
		scoped = true
	case st.op == opUpdate && p.cfg.BeforeImage:
		scoped = false // the before-image of each row the update touches
	default:
		return
	}
	by := st.m.pkFields
	if st.upsert && st.conflict != nil {
		by = st.conflict
	}
	live, err := p.loadBy(db, st.m, by, st.keys, scoped, true)
	if err != nil {
		_ = db.AddError(fmt.Errorf("gormoutbox: %s of %s: read rows before the write: %w", st.op, st.m.name, err))
		return
	}
	st.live = live
}

func (p *Plugin) captureCreate(db *gorm.DB) {
	st := stateOf(db)
	if st == nil || db.Error != nil {
		return
	}
	stmt, m := db.Statement, st.m
	if st.maps > 0 {
		p.captureMapCreate(db, st)
		return
	}
	elems := entities(stmt.ReflectValue)
	if len(elems) == 0 {
		return
	}
	if st.upsert {
		p.captureUpsert(db, st, elems)
		return
	}
	if p.dialect.Name() != "postgres" && m.needsReload(stmt.Context, elems) {
		keys, complete := m.writtenKeysOf(stmt.Context, elems)
		if !complete {
			_ = db.AddError(fmt.Errorf("gormoutbox: create of %s: primary key not set after the insert", m.name))
			return
		}
		rows, err := p.load(db, m, keys, false, false)
		if err != nil {
			_ = db.AddError(fmt.Errorf("gormoutbox: create of %s: read database defaults after the insert: %w", m.name, err))
			return
		}
		for i, k := range keys {
			row, ok := rows[keyString(k)]
			if !ok {
				_ = db.AddError(fmt.Errorf("gormoutbox: create of %s: row %s not found after the insert", m.name, keyString(k)))
				return
			}
			elems[i] = row
		}
	}
	if p.dialect.Name() == "postgres" && len(m.timeFields) > 0 {
		elems = m.roundTimes(stmt.Context, elems)
	}
	p.emit(db, m, elems, repeat(m.createType, len(elems)))
}

// captureUpsert emits the events of an INSERT … ON CONFLICT on the primary
// key: Created for the rows that did not exist (prepare read the others
// under a row lock), Updated for the existing rows the statement changed
// (before and after images compared), nothing for the rest (DO NOTHING, or
// an update that changed nothing). The after-images are re-read. The
// count is cross-checked against RowsAffected where it is reliable, which
// catches a conflict on another unique key (MySQL): the statement fails
// rather than emit the wrong events. PostgreSQL has no gap locks: a row of
// the same key inserted and committed by another transaction between the
// read and the write is reported as Created (with the committed values).
func (p *Plugin) captureUpsert(db *gorm.DB, st *stmtState, elems []reflect.Value) {
	stmt, m := db.Statement, st.m
	by := m.pkFields
	keys, complete := m.writtenKeysOf(stmt.Context, elems)
	if st.conflict != nil {
		// The rows are found again by their conflict key: on MySQL the
		// ids GORM set on the structs of rows that were updated are not
		// theirs.
		by, keys, complete = st.conflict, st.keys, true
	}
	if !complete {
		_ = db.AddError(fmt.Errorf("gormoutbox: upsert of %s: primary key not set after the write", m.name))
		return
	}
	rows, err := p.loadBy(db, m, by, keys, false, false)
	if err != nil {
		_ = db.AddError(fmt.Errorf("gormoutbox: upsert of %s: read the rows after the write: %w", m.name, err))
		return
	}
	var (
		out                         []reflect.Value
		types                       []string
		created, changed, unchanged int64
		befores                     []reflect.Value
		seen                        = make(map[string]bool, len(keys))
		dup                         bool
	)
	for _, k := range keys {
		ks := keyString(k)
		if seen[ks] {
			dup = true
			continue // the same row twice in one statement: one event, for its final state
		}
		seen[ks] = true
		after, ok := rows[ks]
		if !ok {
			_ = db.AddError(uncaptured(m.name, st.op, fmt.Sprintf(
				"as an upsert whose row %s is not found after the write (it met another unique key, whose row the database changed instead)", ks),
				"upsert on the primary key with rows whose keys you know, or on the unique key they meet"))
			return
		}
		before, existed := st.live[ks]
		switch {
		case !existed:
			created++
			out, types = append(out, after), append(types, m.createType)
		case st.doNothing || m.sameRow(stmt.Context, before, after):
			unchanged++
		default:
			changed++
			out, types = append(out, after), append(types, m.updateType)
		}
		if len(befores) < len(out) {
			befores = append(befores, before) // invalid for created rows
		}
	}
	// Cross-check with what the database says it did. MySQL counts 1 per
	// inserted row, 2 per changed row and 0 per unchanged one (1 with
	// clientFoundRows); a conflict on another unique key breaks the count.
	// PostgreSQL counts every row a DO UPDATE touched, changed or not; for
	// DO NOTHING GORM reports the rows it was given, not those inserted, so
	// there is nothing to check.
	var ok bool
	switch {
	case dup:
		ok = true
	case p.dialect.Name() == "mysql" && returned(stmt):
		// MariaDB's INSERT … ON DUPLICATE KEY UPDATE … RETURNING returns
		// one row per row given, inserted, changed or not; GORM counts
		// them and writes the returned key into each struct. A row whose
		// key came back changed met another unique key (its events would
		// name the wrong row): refused below with the count mismatch.
		ok = db.RowsAffected == created+changed+unchanged && !st.keyMoved(stmt.Context, m, elems)
	case p.dialect.Name() == "mysql":
		ok = db.RowsAffected == created+2*changed || db.RowsAffected == created+2*changed+unchanged
	case st.doNothing:
		ok = true
	default:
		ok = db.RowsAffected == created+changed+unchanged
	}
	if !ok {
		_ = db.AddError(uncaptured(m.name, st.op, fmt.Sprintf(
			"as an upsert whose outcome cannot be told apart (%d rows affected, %d created and %d changed expected: a conflict on another unique key, or a row inserted concurrently)",
			db.RowsAffected, created, changed), "upsert on the primary key with rows whose keys you know, or retry"))
		return
	}
	if len(out) == 0 {
		return
	}
	if p.dialect.Name() == "postgres" && len(m.timeFields) > 0 {
		out = m.roundTimes(stmt.Context, out)
	}
	p.emitImages(db, m, out, types, befores, imageChange)
}

// returned reports whether the statement ran with a RETURNING clause (GORM
// then counts the rows returned as RowsAffected).
func returned(stmt *gorm.Statement) bool {
	_, ok := stmt.Clauses["RETURNING"]
	return ok && slices.Contains(stmt.BuildClauses, "RETURNING")
}

// keyMoved reports whether an upsert's row came back with another primary
// key than the one it was written with.
func (st *stmtState) keyMoved(ctx context.Context, m *model, elems []reflect.Value) bool {
	if st.conflict != nil || len(st.preKeys) != len(elems) {
		return false
	}
	for i, e := range elems {
		if st.preKeys[i] == "" {
			continue
		}
		if k, ok := m.writtenKeyOf(ctx, e); !ok || keyString(k) != st.preKeys[i] {
			return true
		}
	}
	return false
}

// sameRow reports whether two images of a row hold the same column values.
func (m *model) sameRow(ctx context.Context, a, b reflect.Value) bool {
	for _, f := range m.schema.Fields {
		if f.DBName == "" {
			continue
		}
		va, _ := f.ValueOf(ctx, a)
		vb, _ := f.ValueOf(ctx, b)
		if !reflect.DeepEqual(va, vb) {
			return false
		}
	}
	return true
}

// roundTimes returns copies of elems whose time values are cut to the
// microsecond as PostgreSQL stores them (pgx sends whole microseconds,
// truncating), so that a create's payload shows the committed values, not
// the nanoseconds the struct holds (GORM's NowFunc keeps them on
// PostgreSQL).
func (m *model) roundTimes(ctx context.Context, elems []reflect.Value) []reflect.Value {
	out := make([]reflect.Value, len(elems))
	for i, e := range elems {
		c := reflect.New(e.Type()).Elem()
		c.Set(e)
		for _, f := range m.timeFields {
			v, zero := f.ValueOf(ctx, c)
			if zero {
				continue
			}
			var t time.Time
			switch x := v.(type) {
			case time.Time:
				t = x
			case *time.Time:
				t = *x
			default:
				continue
			}
			if r := t.Truncate(time.Microsecond); !r.Equal(t) {
				_ = f.Set(ctx, c, r)
			}
		}
		out[i] = c
	}
	return out
}

func (p *Plugin) captureUpdate(db *gorm.DB) {
	st := stateOf(db)
	if st == nil || db.Error != nil {
		return
	}
	stmt, m := db.Statement, st.m
	// The keys as they are now: an update may have changed a key column.
	keys, complete := m.keysOf(stmt.Context, entities(stmt.ReflectValue))
	if !complete || st.byCondition {
		keys = st.keys
	}
	if st.live != nil && !st.byCondition {
		// Soft-delete model: only the rows that were live matched.
		kept := keys[:0:0]
		for i, k := range st.keys {
			if _, ok := st.live[keyString(k)]; ok {
				kept = append(kept, keys[i])
			}
		}
		keys = kept
	}
	rows, err := p.load(db, m, keys, false, false)
	if err != nil {
		_ = db.AddError(fmt.Errorf("gormoutbox: update of %s: read the rows after the write: %w", m.name, err))
		return
	}
	if int64(len(rows)) < db.RowsAffected {
		_ = db.AddError(fmt.Errorf("gormoutbox: update of %s: %d rows changed but %d found after the write", m.name, db.RowsAffected, len(rows)))
		return
	}
	elems := make([]reflect.Value, 0, len(keys))
	befores := make([]reflect.Value, 0, len(keys))
	for _, k := range keys {
		if row, ok := rows[keyString(k)]; ok {
			elems = append(elems, row)
			befores = append(befores, st.live[keyString(k)])
		}
	}
	p.emitImages(db, m, elems, repeat(m.updateType, len(elems)), befores, imageChange)
}

func (p *Plugin) captureDelete(db *gorm.DB) {
	st := stateOf(db)
	if st == nil || db.Error != nil {
		return
	}
	stmt, m := db.Statement, st.m
	var elems, befores []reflect.Value
	typ, img := m.deleteType, imageGone
	if st.softScoped(stmt) {
		img = imageChange
		// Soft delete: the event carries the row as it is now, deleted_at set.
		var keys [][]any
		for _, k := range st.keys {
			if _, ok := st.live[keyString(k)]; ok {
				keys = append(keys, k)
			}
		}
		rows, err := p.load(db, m, keys, false, false)
		if err != nil {
			_ = db.AddError(fmt.Errorf("gormoutbox: delete of %s: read the rows after the write: %w", m.name, err))
			return
		}
		for _, k := range keys {
			if row, ok := rows[keyString(k)]; ok {
				elems = append(elems, row)
				befores = append(befores, st.live[keyString(k)])
			}
		}
	} else {
		// Hard delete: the event carries the last state of the row.
		if m.softDelete {
			typ = m.purgeType
		}
		for _, k := range st.keys {
			if row, ok := st.live[keyString(k)]; ok {
				elems = append(elems, row)
			}
		}
	}
	if int64(len(elems)) != db.RowsAffected {
		_ = db.AddError(fmt.Errorf("gormoutbox: delete of %s: %d rows deleted but %d read under lock", m.name, db.RowsAffected, len(elems)))
		return
	}
	p.emitImages(db, m, elems, repeat(typ, len(elems)), befores, img)
}

// end commits or rolls back the transaction begin opened.
func (p *Plugin) end(db *gorm.DB) {
	key := stateKey{db.Statement}
	v, ok := db.Statement.Settings.LoadAndDelete(key)
	if !ok {
		return
	}
	st := v.(*stmtState)
	committed := false
	if st.startedTx {
		if db.Error != nil {
			db.Rollback()
		} else {
			db.Commit()
			committed = db.Error == nil
		}
		db.Statement.ConnPool = db.ConnPool
	} else if started, ok := db.InstanceGet("gorm:started_transaction"); ok {
		// GORM's own transaction, committed by gorm:commit_or_rollback_transaction.
		b, _ := started.(bool)
		committed = b && db.Error == nil
	}
	if st.wrote && db.Error == nil {
		if committed {
			p.wake()
		} else {
			p.wakeLater() // your transaction: its commit is not seen
		}
	}
}

// wake tells Config.Wake that committed outbox rows are waiting.
func (p *Plugin) wake() {
	if p.cfg.Wake != nil {
		p.cfg.Wake()
	}
}

// wakeLaterDelays are when wakeLater calls Wake after outbox rows were
// written in a transaction the plugin does not see commit.
var wakeLaterDelays = [...]time.Duration{5 * time.Millisecond, 50 * time.Millisecond, 500 * time.Millisecond}

// wakeLater wakes the relay a few times shortly after outbox rows were
// written in a transaction the caller commits (db.Transaction, Begin):
// GORM has no callback for that commit. Best effort; on PostgreSQL the
// relay's Listen is exact, and cron remains the safety net.
func (p *Plugin) wakeLater() {
	if p.cfg.Wake == nil {
		return
	}
	for _, d := range wakeLaterDelays {
		time.AfterFunc(d, p.cfg.Wake)
	}
}

// emit builds the events of elems (with the matching types) and writes
// them to the outbox on the statement's transaction.
// image says what an event's payload shows when Config.BeforeImage is on.
type image int

const (
	imageRow    image = iota // the row (creates; updates and deletes without BeforeImage)
	imageChange              // {"before": …, "after": row}
	imageGone                // {"before": row, "after": null}: a hard delete
)

func (p *Plugin) emit(db *gorm.DB, m *model, elems []reflect.Value, types []string) {
	p.emitImages(db, m, elems, types, nil, imageRow)
}

// emitImages is emit with before-images (same index as elems; an invalid
// Value is a row that had none) for Config.BeforeImage.
func (p *Plugin) emitImages(db *gorm.DB, m *model, elems []reflect.Value, types []string, befores []reflect.Value, img image) {
	if !p.cfg.BeforeImage {
		img = imageRow
	}
	if len(elems) == 0 {
		return
	}
	stmt := db.Statement
	if !inTransaction(stmt.ConnPool) {
		_ = db.AddError(fmt.Errorf("gormoutbox: %s: not in a transaction, refusing a non-atomic write", m.name))
		return
	}
	ctx := stmt.Context
	headers := p.headers(ctx, "application/json", m.version)
	if m.ackTopic != "" {
		headers[HeaderAckTopic] = m.ackTopic
		headers[HeaderProcessAttempt] = "1"
	}
	now := p.cfg.Now().UTC()
	recs := make([]dialects.Record, len(elems))
	for i, e := range elems {
		var before reflect.Value
		if i < len(befores) {
			before = befores[i]
		}
		im := img
		if im == imageChange && !before.IsValid() && types[i] == m.createType {
			im = imageRow // a row an upsert created has no before-image
		}
		r, err := p.entityRecord(ctx, m, types[i], e, before, im, now, headers)
		if err != nil {
			_ = db.AddError(err)
			return
		}
		recs[i] = r
	}
	if err := p.dialect.Insert(ctx, stmt.ConnPool, p.table, recs); err != nil {
		_ = db.AddError(fmt.Errorf("gormoutbox: %s: %w", m.name, err))
		return
	}
	if st := stateOf(db); st != nil {
		st.wrote = true
	}
}

func (p *Plugin) headers(ctx context.Context, contentType, version string) map[string]string {
	h := make(map[string]string, 4)
	h["content-type"] = contentType
	if version != "" {
		h["schema-version"] = version
	}
	p.cfg.Propagator.Inject(ctx, propagation.MapCarrier(h))
	return h
}

func (p *Plugin) entityRecord(ctx context.Context, m *model, typ string, e, before reflect.Value, img image, now time.Time, headers map[string]string) (dialects.Record, error) {
	payload, err := m.enc.encode(e)
	if err != nil {
		return dialects.Record{}, err
	}
	switch img {
	case imageChange:
		b := []byte("null")
		if before.IsValid() {
			if b, err = m.enc.encode(before); err != nil {
				return dialects.Record{}, err
			}
		}
		payload = beforeAfter(b, payload)
	case imageGone:
		payload = beforeAfter(payload, []byte("null"))
	}
	pk := fieldValues(ctx, m.pkFields, e)
	aggID := keyString(pk)
	key := aggID
	if !sameFields(m.keyFields, m.pkFields) {
		key = keyString(fieldValues(ctx, m.keyFields, e))
	}
	if len(key) > MaxKeyLen {
		return dialects.Record{}, fmt.Errorf("%w: model %s row %s: message key is %d bytes, over the limit of %d",
			ErrInvalidEvent, m.name, aggID, len(key), MaxKeyLen)
	}
	return dialects.Record{
		EventID:       p.ids.New(),
		Topic:         m.topic,
		Key:           []byte(key),
		EventType:     typ,
		AggregateType: m.aggregateType,
		AggregateID:   aggID,
		Payload:       payload,
		Headers:       headers,
		Shard:         p.shard([]byte(key)),
		CreatedAt:     now,
		AvailableAt:   now,
		AckTopic:      m.ackTopic,
	}, nil
}

func beforeAfter(before, after []byte) []byte {
	out := make([]byte, 0, len(before)+len(after)+20)
	out = append(out, `{"before":`...)
	out = append(out, before...)
	out = append(out, `,"after":`...)
	out = append(out, after...)
	return append(out, '}')
}

func (p *Plugin) shard(key []byte) int {
	return int(dialects.HashKey(key) % uint32(p.cfg.Shards))
}

// load reads the rows of m with the given primary keys, on the statement's
// transaction, into fresh model values keyed by keyString. scoped applies
// the model's default query scopes (soft delete); lock reads FOR UPDATE.
func (p *Plugin) load(db *gorm.DB, m *model, keys [][]any, scoped, lock bool) (map[string]reflect.Value, error) {
	return p.loadBy(db, m, m.pkFields, keys, scoped, lock)
}

// loadBy is load by the values of other fields than the primary key (a
// unique key); the rows come back keyed by keyString of those values.
func (p *Plugin) loadBy(db *gorm.DB, m *model, by []*schema.Field, keys [][]any, scoped, lock bool) (map[string]reflect.Value, error) {
	names := make([]string, len(by))
	for i, f := range by {
		names[i] = f.DBName
	}
	out := make(map[string]reflect.Value, len(keys))
	for len(keys) > 0 {
		n := min(len(keys), dialects.MaxInsertRows)
		chunk := keys[:n]
		keys = keys[n:]
		col, vals := schema.ToQueryValues(clause.CurrentTable, names, chunk)
		rows, _, err := p.selectRows(db, m, rowRead{exprs: []clause.Expression{clause.IN{Column: col, Values: vals}}, scoped: scoped, lock: lock, by: by})
		if err != nil {
			return nil, err
		}
		for k, v := range rows {
			out[k] = v
		}
	}
	return out, nil
}

// selectRows reads the rows of m's table that r describes, on the
// statement's own connection, with GORM's clause builders but no query
// callbacks. When r.limit > 0, order lists their keys in the order read.
func (p *Plugin) selectRows(db *gorm.DB, m *model, r rowRead) (map[string]reflect.Value, [][]any, error) {
	exprs, scoped, lock, limit, by, from := r.exprs, r.scoped, r.lock, r.limit, r.by, r.from
	if by == nil {
		by = m.pkFields
	}
	q := db.Session(&gorm.Session{NewDB: true}).Table(db.Statement.Table)
	st := q.Statement
	st.ConnPool = db.Statement.ConnPool
	st.Context = db.Statement.Context
	slice := reflect.New(reflect.SliceOf(m.schema.ModelType))
	st.Dest, st.Model, st.Schema = slice.Interface(), slice.Interface(), m.schema
	st.Unscoped = !scoped
	if scoped {
		for _, c := range m.schema.QueryClauses {
			st.AddClause(c)
		}
	}
	if len(exprs) > 0 {
		st.AddClause(clause.Where{Exprs: exprs})
	}
	parts := []string{"SELECT", "FROM", "WHERE"}
	if limit > 0 {
		ob := clause.OrderBy{}
		if r.orderBy != nil {
			ob = *r.orderBy // the write's own order first (MySQL's UPDATE … ORDER BY … LIMIT)
		}
		if ob.Expression == nil {
			for _, n := range m.pkDBNames {
				ob.Columns = append(ob.Columns, clause.OrderByColumn{Column: clause.Column{Table: clause.CurrentTable, Name: n}})
			}
		}
		st.AddClause(ob)
		st.AddClause(clause.Limit{Limit: &limit})
		parts = append(parts, "ORDER BY", "LIMIT")
	}
	if from != nil {
		// Only m's columns, of m's table: the other tables have theirs.
		cols := make([]clause.Column, 0, len(m.schema.DBNames))
		for _, n := range m.schema.DBNames {
			cols = append(cols, clause.Column{Table: clause.CurrentTable, Name: n})
		}
		st.AddClause(clause.Select{Columns: cols})
		tables := append([]clause.Table{{Name: clause.CurrentTable}}, from.Tables...)
		st.AddClause(clause.From{Tables: tables, Joins: from.Joins})
	}
	if lock {
		l := clause.Locking{Strength: clause.LockingStrengthUpdate}
		if from != nil {
			l.Table = clause.Table{Name: clause.CurrentTable}
		}
		st.AddClause(l)
		parts = append(parts, "FOR")
	}
	st.AddClauseIfNotExists(clause.Select{})
	st.AddClauseIfNotExists(clause.From{})
	st.Build(parts...)
	rows, err := st.ConnPool.QueryContext(st.Context, st.SQL.String(), st.Vars...)
	if err != nil {
		return nil, nil, err
	}
	st.ReflectValue = slice.Elem()
	gorm.Scan(rows, q, 0)
	cerr := rows.Close()
	if q.Error != nil {
		return nil, nil, q.Error
	}
	if cerr != nil {
		return nil, nil, cerr
	}
	sv := slice.Elem()
	out := make(map[string]reflect.Value, sv.Len())
	var order [][]any
	for i := 0; i < sv.Len(); i++ {
		e := sv.Index(i)
		k := fieldValues(st.Context, by, e)
		ks := keyString(k)
		if _, dup := out[ks]; dup {
			continue // joined to several rows of another table
		}
		out[ks] = e
		if limit > 0 {
			order = append(order, k)
		}
	}
	return out, order, nil
}

// needsReload reports whether a created entity still lacks values the
// database computed (defaults that are expressions), which only a read
// after the insert can fill in where INSERT … RETURNING is not used.
func (m *model) needsReload(ctx context.Context, elems []reflect.Value) bool {
	for _, f := range m.dbDefaults {
		for _, e := range elems {
			if _, zero := f.ValueOf(ctx, e); zero {
				return true
			}
		}
	}
	return false
}

// writtenKeyOf returns the primary key values of e as a create writes
// them: a zero value is a key (GORM writes it, as in a composite key
// CouponProduct{CouponID: 2, ProductID: ""}) unless the database generates
// the column (auto increment, a database default), which GORM leaves out.
// ok is false when such a generated part is still zero.
func (m *model) writtenKeyOf(ctx context.Context, e reflect.Value) ([]any, bool) {
	k := make([]any, len(m.pkFields))
	for i, f := range m.pkFields {
		v, zero := f.ValueOf(ctx, e)
		if zero && f.HasDefaultValue && f.DefaultValueInterface == nil {
			return nil, false
		}
		k[i] = v
	}
	return k, true
}

// writtenKeysOf is writtenKeyOf of every entity; complete is false when
// one has no key.
func (m *model) writtenKeysOf(ctx context.Context, elems []reflect.Value) (keys [][]any, complete bool) {
	keys = make([][]any, 0, len(elems))
	for _, e := range elems {
		k, ok := m.writtenKeyOf(ctx, e)
		if !ok {
			return keys, false
		}
		keys = append(keys, k)
	}
	return keys, true
}

// keysOf returns the primary key values of elems; complete is false when a
// key is zero (the entity does not identify a row).
func (m *model) keysOf(ctx context.Context, elems []reflect.Value) (keys [][]any, complete bool) {
	keys = make([][]any, 0, len(elems))
	for _, e := range elems {
		k := make([]any, len(m.pkFields))
		for i, f := range m.pkFields {
			v, zero := f.ValueOf(ctx, e)
			if zero {
				return keys, false
			}
			k[i] = v
		}
		keys = append(keys, k)
	}
	return keys, true
}

func fieldValues(ctx context.Context, fields []*schema.Field, e reflect.Value) []any {
	vs := make([]any, len(fields))
	for i, f := range fields {
		vs[i], _ = f.ValueOf(ctx, e)
	}
	return vs
}

func sameFields(a, b []*schema.Field) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// keyString renders key values as a message key / aggregate id: the value
// itself for a single column, a JSON array of the values for several.
func keyString(vals []any) string {
	if len(vals) == 1 {
		return formatKey(vals[0])
	}
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = formatKey(v)
	}
	b, _ := json.Marshal(parts)
	return string(b)
}

func formatKey(v any) string {
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return ""
		}
		rv = rv.Elem()
		v = rv.Interface()
	}
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	case time.Time:
		return x.UTC().Truncate(time.Microsecond).Format(time.RFC3339Nano)
	case fmt.Stringer:
		return x.String()
	}
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(rv.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(rv.Uint(), 10)
	case reflect.String:
		return rv.String()
	}
	return fmt.Sprint(v)
}

// isEntityValue reports whether rv is a struct or a slice/array of structs
// (or pointers to them): values that carry whole entities.
func isEntityValue(rv reflect.Value) bool {
	if !rv.IsValid() {
		return false
	}
	t := rv.Type()
	switch t.Kind() {
	case reflect.Struct:
		return true
	case reflect.Slice, reflect.Array:
		et := t.Elem()
		for et.Kind() == reflect.Pointer {
			et = et.Elem()
		}
		return et.Kind() == reflect.Struct
	}
	return false
}

// entities returns the struct values held by rv, in order.
func entities(rv reflect.Value) []reflect.Value {
	switch rv.Kind() {
	case reflect.Struct:
		return []reflect.Value{rv}
	case reflect.Slice, reflect.Array:
		out := make([]reflect.Value, 0, rv.Len())
		for i := 0; i < rv.Len(); i++ {
			e := rv.Index(i)
			for e.Kind() == reflect.Pointer || e.Kind() == reflect.Interface {
				if e.IsNil() {
					break
				}
				e = e.Elem()
			}
			if e.Kind() == reflect.Struct {
				out = append(out, e)
			}
		}
		return out
	}
	return nil
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}
