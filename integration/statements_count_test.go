package integration

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"sync/atomic"
	"testing"

	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// stmtCounter counts what a database/sql pool sends its server: BEGIN,
// COMMIT and ROLLBACK, each statement run (a query or an exec), each
// prepare (the MySQL driver prepares a statement with arguments before
// it runs it, unless interpolateParams is set).
type stmtCounter struct {
	begins, commits, runs, prepares atomic.Int64
}

func (c *stmtCounter) snapshot() [4]int64 {
	return [4]int64{c.begins.Load(), c.runs.Load(), c.prepares.Load(), c.commits.Load()}
}

type countingConnector struct {
	driver.Connector
	c *stmtCounter
}

func (k countingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := k.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, c: k.c}, nil
}

type countingConn struct {
	driver.Conn
	c *stmtCounter
}

func (k *countingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	k.c.begins.Add(1)
	tx, err := k.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return countingTx{Tx: tx, c: k.c}, nil
}

func (k *countingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	k.c.prepares.Add(1)
	s, err := k.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	return &countingStmt{Stmt: s, c: k.c}, nil
}

func (k *countingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	e, ok := k.Conn.(driver.ExecerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	r, err := e.ExecContext(ctx, query, args)
	if err != driver.ErrSkip {
		k.c.runs.Add(1)
	}
	return r, err
}

func (k *countingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	q, ok := k.Conn.(driver.QueryerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	r, err := q.QueryContext(ctx, query, args)
	if err != driver.ErrSkip {
		k.c.runs.Add(1)
	}
	return r, err
}

func (k *countingConn) CheckNamedValue(v *driver.NamedValue) error {
	if c, ok := k.Conn.(driver.NamedValueChecker); ok {
		return c.CheckNamedValue(v)
	}
	return driver.ErrSkip
}

func (k *countingConn) ResetSession(ctx context.Context) error {
	if r, ok := k.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

type countingTx struct {
	driver.Tx
	c *stmtCounter
}

func (t countingTx) Commit() error   { t.c.commits.Add(1); return t.Tx.Commit() }
func (t countingTx) Rollback() error { t.c.commits.Add(1); return t.Tx.Rollback() }

type countingStmt struct {
	driver.Stmt
	c *stmtCounter
}

func (s *countingStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	s.c.runs.Add(1)
	return s.Stmt.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (s *countingStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	s.c.runs.Add(1)
	return s.Stmt.(driver.StmtQueryContext).QueryContext(ctx, args)
}

func (s *countingStmt) CheckNamedValue(v *driver.NamedValue) error {
	if c, ok := s.Stmt.(driver.NamedValueChecker); ok {
		return c.CheckNamedValue(v)
	}
	return driver.ErrSkip
}

// countedDB opens the database of d a second time through a stmtCounter,
// with the plugin (cfg) and the outbox migrated.
func countedDB(t *testing.T, d testenv.Dialect, cfg gormoutbox.Config) (*gorm.DB, *stmtCounter) {
	t.Helper()
	base := d.Open(t, nil)
	sqlBase, err := base.DB()
	if err != nil {
		t.Fatal(err)
	}
	var dsn string
	switch dl := base.Dialector.(type) {
	case *postgres.Dialector:
		dsn = dl.Config.DSN
	case *mysql.Dialector:
		dsn = dl.Config.DSN
	default:
		t.Fatalf("dialector %T", base.Dialector)
	}
	dc, ok := sqlBase.Driver().(driver.DriverContext)
	if !ok {
		t.Fatalf("driver %T has no OpenConnector", sqlBase.Driver())
	}
	conn, err := dc.OpenConnector(dsn)
	if err != nil {
		t.Fatal(err)
	}
	c := &stmtCounter{}
	sqlDB := sql.OpenDB(countingConnector{Connector: conn, c: c})
	sqlDB.SetMaxOpenConns(1)
	t.Cleanup(func() { sqlDB.Close() })
	var dialector gorm.Dialector
	if pd, ok := base.Dialector.(*postgres.Dialector); ok {
		cfg := *pd.Config
		cfg.Conn, cfg.DSN = sqlDB, ""
		dialector = postgres.New(cfg)
	} else {
		md := base.Dialector.(*mysql.Dialector)
		cfg := *md.Config
		cfg.Conn, cfg.DSN = sqlDB, ""
		cfg.SkipInitializeWithVersion = false
		dialector = mysql.New(cfg)
	}
	db, err := gorm.Open(dialector, &gorm.Config{Logger: base.Logger, NowFunc: base.NowFunc})
	if err != nil {
		t.Fatal(err)
	}
	p := gormoutbox.New(cfg)
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	if err := p.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := db.AutoMigrate(&BenchPlainInventory{}, &BenchCondItem{}, &BenchInventory{}); err != nil {
		t.Fatal(err)
	}
	return db, c
}

// TestCaptureByConditionStatements counts what the writes of
// BenchmarkCaptureByCondition send the server, untagged and tagged (and
// logs it: go test -v -run TestCaptureByConditionStatements). On
// PostgreSQL an update by condition sends its statement, the outbox INSERT
// and nothing else; its upsert one locking read more (the before-images).
func TestCaptureByConditionStatements(t *testing.T) {
	for _, before := range []bool{false, true} {
		t.Run(fmt.Sprintf("BeforeImage=%v", before), func(t *testing.T) {
			forEachCaptureDialect(t, func(t *testing.T, d testenv.Dialect) {
				db, c := countedDB(t, d, gormoutbox.Config{BeforeImage: before})
				rows := func(n int) ([]BenchPlainInventory, []BenchCondItem, []BenchInventory) {
					p, k, s := make([]BenchPlainInventory, n), make([]BenchCondItem, n), make([]BenchInventory, n)
					for j := 0; j < n; j++ {
						p[j] = BenchPlainInventory{SKU: fmt.Sprint("cond-", j), Quantity: j}
						k[j] = BenchCondItem{SKU: fmt.Sprint("cond-", j), Quantity: j}
						s[j] = BenchInventory{SKU: fmt.Sprint("cond-", j), Quantity: j}
					}
					return p, k, s
				}
				pRows, kRows, sRows := rows(100)
				for _, v := range []any{&pRows, &kRows, &sRows} {
					if err := db.Create(v).Error; err != nil {
						t.Fatal(err)
					}
				}
				set := map[string]any{"quantity": gorm.Expr("quantity + 1")}
				count := func(name string, f func() error) [4]int64 {
					t.Helper()
					if err := f(); err != nil { // warm (schema, prepared statements)
						t.Fatalf("%s: %v", name, err)
					}
					a := c.snapshot()
					if err := f(); err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					b := c.snapshot()
					var n [4]int64
					for i := range n {
						n[i] = b[i] - a[i]
					}
					t.Logf("%-28s begin %d, statements %d, prepares %d, commit %d", name, n[0], n[1], n[2], n[3])
					return n
				}
				up := clause.OnConflict{UpdateAll: true}
				count("update untagged", func() error {
					return db.Model(&BenchPlainInventory{}).Where("sku LIKE ?", "cond-%").Updates(set).Error
				})
				upd := count("update tagged", func() error {
					return db.Model(&BenchCondItem{}).Where("sku LIKE ?", "cond-%").Updates(set).Error
				})
				count("update tagged, sku key", func() error {
					return db.Model(&BenchInventory{}).Where("sku LIKE ?", "cond-%").Updates(set).Error
				})
				count("upsert untagged", func() error { return db.Clauses(up).Create(&pRows).Error })
				ups := count("upsert tagged", func() error { return db.Clauses(up).Create(&kRows).Error })
				count("upsert tagged, sku key", func() error { return db.Clauses(up).Create(&sRows).Error })
				if d.Name == "postgres" {
					// BEGIN, the update (+ the locking read with BeforeImage),
					// the outbox INSERT, COMMIT.
					if want := int64(2); before {
						if upd[1] != want+1 {
							t.Errorf("update by condition sent %d statements, want %d", upd[1], want+1)
						}
					} else if upd[1] != want {
						t.Errorf("update by condition sent %d statements, want %d (one UPDATE, one outbox INSERT)", upd[1], want)
					}
					// The locking read, the upsert, the outbox INSERT.
					if ups[1] != 3 {
						t.Errorf("upsert sent %d statements, want 3 (locking read, upsert, outbox INSERT)", ups[1])
					}
				}
			})
		})
	}
}
