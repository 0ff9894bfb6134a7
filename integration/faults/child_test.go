package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	kafkago "github.com/segmentio/kafka-go"
	mysqldriver "gorm.io/driver/mysql"
	pgdriver "gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/inbox"
	"github.com/go-outbox/outbox/kafka"
)

// The child processes of the suite are this test binary run again with
// childEnv naming their role; childSpec (JSON in specEnv) says where and
// how. They run until killed, and exit by themselves when their parent
// (the test) is gone.
const (
	childEnv = "OUTBOX_FAULTS_CHILD"
	specEnv  = "OUTBOX_FAULTS_SPEC"
)

// childSpec is what a child needs: the database, the broker and the
// relay's or consumer's settings.
type childSpec struct {
	Dialect string // "postgres" or "mysql"
	DSN     string
	Brokers []string
	Topic   string
	Group   string // the inbox consumer's group
	// StatsFile is where the consumer keeps its inbox.Stats (JSON).
	StatsFile string
	// Relay settings (zero: the library's defaults).
	MinBackoff, MaxBackoff time.Duration
	MaxAttempts, MaxShards int
	BatchSize              int
}

func TestMain(m *testing.M) {
	// The MySQL driver logs every connection the faults break to stderr.
	_ = gomysql.SetLogger(stdlog.New(io.Discard, "", 0))
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "relay", "consumer":
		os.Exit(runChild(os.Getenv(childEnv)))
	default:
		fmt.Fprintf(os.Stderr, "faults: unknown %s=%q\n", childEnv, os.Getenv(childEnv))
		os.Exit(2)
	}
}

// runChild runs a relay loop or an inbox consumer until killed.
func runChild(role string) int {
	var spec childSpec
	if err := json.Unmarshal([]byte(os.Getenv(specEnv)), &spec); err != nil {
		fmt.Fprintf(os.Stderr, "faults child: %s: %v\n", specEnv, err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// An orphan (the test died without killing it) stops by itself.
	go func(parent int) {
		for range time.Tick(200 * time.Millisecond) {
			if os.Getppid() != parent {
				os.Exit(3)
			}
		}
	}(os.Getppid())
	db, err := openDB(spec.Dialect, spec.DSN)
	if err != nil {
		fmt.Fprintf(os.Stderr, "faults child: open: %v\n", err)
		return 2
	}
	if role == "consumer" {
		return runConsumer(ctx, db, spec, log)
	}
	pub, err := kafka.NewPublisher(kafka.Config{Brokers: spec.Brokers, WriteTimeout: 2 * time.Second})
	if err != nil {
		fmt.Fprintf(os.Stderr, "faults child: publisher: %v\n", err)
		return 2
	}
	r, err := gormoutbox.NewRelay(db, pub, gormoutbox.RelayConfig{
		MinBackoff: spec.MinBackoff, MaxBackoff: spec.MaxBackoff, MaxAttempts: spec.MaxAttempts,
		MaxShards: spec.MaxShards, BatchSize: spec.BatchSize, PublishTimeout: 5 * time.Second, Logger: log,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "faults child: relay: %v\n", err)
		return 2
	}
	lastErr := ""
	for {
		res, err := r.Drain(ctx)
		if err != nil && err.Error() != lastErr {
			lastErr = err.Error()
			log.Warn("faults relay: drain", "error", err)
		}
		if res.Batches == 0 || err != nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// runConsumer runs an inbox consumer whose handler is not idempotent: it
// adds a row to the effects table for every call. The inbox must make
// every event's effect happen once.
func runConsumer(ctx context.Context, db *gorm.DB, spec childSpec, log *slog.Logger) int {
	h := func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
		var v struct{ Version int64 }
		if err := json.Unmarshal(m.Value, &v); err != nil {
			return err
		}
		return tx.Create(&Effect{EventID: m.EventID, Name: string(m.Key), Version: v.Version}).Error
	}
	c, err := inbox.New(db, h, inbox.Config{Brokers: spec.Brokers, GroupID: spec.Group, Topics: []string{spec.Topic},
		SessionTimeout: 6 * time.Second,
		MinBackoff:     20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Logger: log,
		// The coordinator waits up to the rebalance timeout of a killed
		// member before the group goes on (kafka-go's default: 30 s).
		Reader: func(rc *kafkago.ReaderConfig) { rc.RebalanceTimeout = 5 * time.Second },
		// Asked to (the test made the file StatsFile.killme), the consumer
		// waits to be killed between a batch's commit and its offsets':
		// the broker then redelivers messages the inbox has applied.
		AfterCommit: func(context.Context, []*inbox.Message) {
			if os.Remove(spec.StatsFile+".killme") == nil {
				_ = os.WriteFile(spec.StatsFile+".inwindow", nil, 0o644)
				time.Sleep(time.Minute)
			}
		}})
	if err != nil {
		fmt.Fprintf(os.Stderr, "faults child: inbox: %v\n", err)
		return 2
	}
	go func() {
		for range time.Tick(100 * time.Millisecond) {
			b, _ := json.Marshal(c.Stats())
			if os.WriteFile(spec.StatsFile+".tmp", b, 0o644) == nil {
				_ = os.Rename(spec.StatsFile+".tmp", spec.StatsFile)
			}
		}
	}()
	for {
		if err := c.Run(ctx); err != nil {
			log.Warn("faults consumer: run", "error", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// openDB opens the database of dialect at dsn as the tests do (MariaDB
// without RETURNING, like MySQL 8).
func openDB(dialect, dsn string) (*gorm.DB, error) {
	cfg := &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)}
	var (
		db  *gorm.DB
		err error
	)
	switch dialect {
	case "postgres":
		db, err = gorm.Open(pgdriver.Open(dsn), cfg)
	case "mysql":
		db, err = gorm.Open(mysqldriver.New(mysqldriver.Config{DSN: dsn, DisableWithReturning: true}), cfg)
	default:
		return nil, fmt.Errorf("dialect %q", dialect)
	}
	if err != nil {
		return nil, err
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, err
	}
	sqlDB.SetMaxIdleConns(8)
	return db, nil
}

// dsnOf returns the DSN db was opened with.
func dsnOf(t *testing.T, db *gorm.DB) string {
	t.Helper()
	switch d := db.Dialector.(type) {
	case *pgdriver.Dialector:
		return d.Config.DSN
	case *mysqldriver.Dialector:
		return d.Config.DSN
	}
	t.Fatalf("dialector %T", db.Dialector)
	return ""
}

// withAddr returns dsn with its server's address replaced by addr.
func withAddr(t *testing.T, dialect, dsn, addr string) string {
	t.Helper()
	if dialect == "mysql" {
		i := strings.Index(dsn, "tcp(")
		j := strings.Index(dsn, ")/")
		if i < 0 || j < i {
			t.Fatalf("MySQL DSN without tcp(address)")
		}
		return dsn[:i] + "tcp(" + addr + dsn[j:]
	}
	i := strings.Index(dsn, "@")
	j := strings.Index(dsn[i+1:], "/")
	if i < 0 || j < 0 {
		t.Fatalf("PostgreSQL URL without host")
	}
	return dsn[:i+1] + addr + dsn[i+1+j:]
}
