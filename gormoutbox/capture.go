package gormoutbox

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
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
//
// Files: capture.go (the callbacks, planning, prepare, end), capture_create.go
// (creates of structs, and the refusal of INSERT IGNORE), capture_map.go
// (creates from maps), capture_upsert.go, capture_update.go,
// capture_delete.go, capture_condition.go (writes by condition: the locking
// read and the restriction), capture_returning.go (PostgreSQL's update by
// condition in one statement), capture_upsert_images.go (an upsert's rows
// known without a re-read), capture_rows.go (the rows as committed: the
// reads, and times cut as stored), keys.go (keys, generated and unique
// keys, entity values), event.go (building and inserting the events),
// wake.go (wake-ups), errors.go (UncapturedError). What differs between
// databases is read from the dialect's Capabilities (Plugin.caps).

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
	// ret: an update by condition that returns its rows (capture_returning.go);
	// returned: the rows it returned, in key order.
	ret      *returning
	returned []reflect.Value
}

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
		returns := p.returnsUpdate(stmt, st)
		if returns && !p.cfg.BeforeImage {
			p.prepareReturning(db, st, false) // the write locks its rows itself
			return
		}
		if err := p.lockMatching(db, st); err != nil {
			_ = db.AddError(fmt.Errorf("gormoutbox: %s of %s: %w", st.op, st.m.name, err))
			return
		}
		if returns {
			p.prepareReturning(db, st, true)
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

// end commits or rolls back the transaction begin opened.
func (p *Plugin) end(db *gorm.DB) {
	key := stateKey{db.Statement}
	v, ok := db.Statement.Settings.LoadAndDelete(key)
	if !ok {
		return
	}
	st := v.(*stmtState)
	st.endReturning()
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
