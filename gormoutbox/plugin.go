// Package gormoutbox is the transactional outbox for GORM: a plugin that
// writes an event row into the outbox table in the same database transaction
// as every create, update and delete of a tagged model, and a Publish call
// for domain events of your own.
//
// Adopting it takes three steps:
//
//  1. Tag the models that are event sources (see Source).
//  2. Register the plugin: db.Use(gormoutbox.New(gormoutbox.Config{})), and
//     create the outbox table with Plugin.Migrate.
//  3. Run the relay, which publishes the committed rows to Kafka.
//
// The promise: no committed write to a tagged model without its event, and
// no event without its committed write. A write the plugin cannot capture is
// refused with ErrUncapturedWrite rather than committed without its event.
package gormoutbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/pick"
	"github.com/go-outbox/outbox/internal/eventid"
)

// PluginName is the name the plugin registers under in gorm.Config.Plugins.
const PluginName = "gormoutbox"

// Defaults of Config.
const (
	DefaultTable  = "outbox"
	DefaultShards = 16
	// MaxKeyLen is the longest message key accepted, in bytes.
	MaxKeyLen = 1024
	// DefaultMaxPayloadBytes is the default Config.MaxPayloadBytes: the
	// kafka Publisher's default BatchBytes (kafka.DefaultBatchBytes), the
	// most one message may take there.
	DefaultMaxPayloadBytes = 1_000_000
	// maxMaxPayloadBytes bounds Config.MaxPayloadBytes: 1 GiB, PostgreSQL's
	// limit for a field and MySQL's for a packet.
	maxMaxPayloadBytes = 1 << 30
)

// Config configures the plugin. The zero value is ready to use.
type Config struct {
	// Table is the outbox table, "table" or "schema.table", each part a
	// plain identifier. Default "outbox".
	Table string

	// Shards is the number of shards rows are spread over by a hash of
	// their message key; the relay on MySQL takes one advisory lock per
	// shard, so it bounds how many relays share the work. The relay must
	// be configured with the same number. Default 16.
	Shards int

	// Propagator injects the trace context of the write's context.Context
	// into each event's headers. Default propagation.TraceContext{}, which
	// writes the W3C "traceparent" (and "tracestate") when ctx carries a
	// valid span context.
	Propagator propagation.TextMapPropagator

	// Dialect overrides the dialect picked from the GORM dialector's name
	// ("postgres" or "mysql").
	Dialect dialects.Dialect

	// BeforeImage makes update and delete events carry the row before the
	// write as well: the payload becomes {"before": …, "after": …}, with
	// "after" null for a hard delete ("before" is null for a row an
	// upsert created, whose payload stays the row alone). It costs a
	// locking read before every captured update. Default false.
	BeforeImage bool

	// Wake, when set, is called when outbox rows are waiting for the
	// relay, so that it need not wait for its next cron tick: right after
	// the commit of a transaction GORM or the plugin opened, and — since
	// GORM reports no commit of a transaction you open with
	// db.Transaction or Begin — 5 ms, 50 ms and 500 ms after rows are
	// written in one (on PostgreSQL, Listen is exact for those). It must
	// not block; scheduler.Wake fits, with Relay.Notify when the relay
	// runs in this process (a pass in progress then looks again at once):
	//
	//	Wake: func() { relay.Notify(); _ = sched.Wake("outbox-relay") }
	Wake func()

	// DisableNotify turns off, at Migrate, the PostgreSQL trigger that
	// sends NOTIFY for Relay.Listen (Migrate turns it back on when false).
	// PostgreSQL serialises the commits of notifying transactions, which
	// cost about a quarter of the peak concurrent commit rate in our
	// measurements; without it the relay relies on Wake and cron. The
	// setting is the table's, so the last process to migrate decides.
	// Default false (notifications on). No effect on MySQL.
	DisableNotify bool

	// Models lists event sources (values or pointers of tagged models) to
	// check and register at db.Use: their tag errors fail Use, and their
	// tables are known from the start, so that a write through
	// db.Table("table") without the model is captured whatever ran
	// before it. Without it, a table's model is found among the models
	// written through so far and the schemas GORM has parsed on the
	// *gorm.DB (AutoMigrate, any statement through the model). Default
	// none.
	Models []any

	// MaxPayloadBytes bounds an event's payload, in bytes: a captured
	// write or a Publish whose payload is larger is refused with a
	// *PayloadTooLargeError (ErrPayloadTooLarge) in the caller's
	// transaction, and nothing is written — rather than written and
	// dead-lettered by the relay when the broker cannot take it. Set it to
	// the broker's limit (message.max.bytes) or the Publisher's
	// (kafka.Config.BatchBytes) if you raised those. Default
	// DefaultMaxPayloadBytes (1,000,000, the kafka Publisher's default
	// BatchBytes); at most 1 GiB.
	MaxPayloadBytes int

	// Logger receives the plugin's logs. Default: no logging.
	Logger *slog.Logger

	// Now returns the current time; for tests. Default time.Now.
	Now func() time.Time
}

// Plugin is the GORM plugin. Create it with New and register it with
// (*gorm.DB).Use. A Plugin serves the *gorm.DB it is first registered on
// (Migrate, Validate); when GORM initializes it again for another
// connection of the same kind of database — gorm.Open with the same Config,
// as dbresolver does for its replicas — it captures there too.
type Plugin struct {
	cfg     Config
	table   dialects.Table
	dialect dialects.Dialect
	caps    dialects.Capabilities // the dialect's, read once at Initialize
	db      *gorm.DB
	models  registry
	ids     eventid.Generator
	log     *slog.Logger
	cfgErr  error
}

// New returns the plugin configured by cfg. Configuration errors are
// reported by (*gorm.DB).Use.
func New(cfg Config) *Plugin {
	p := &Plugin{cfg: cfg}
	if p.cfg.Table == "" {
		p.cfg.Table = DefaultTable
	}
	if p.cfg.Shards == 0 {
		p.cfg.Shards = DefaultShards
	}
	if p.cfg.Propagator == nil {
		p.cfg.Propagator = propagation.TraceContext{}
	}
	if p.cfg.Now == nil {
		p.cfg.Now = time.Now
	}
	if p.cfg.MaxPayloadBytes == 0 {
		p.cfg.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	p.log = p.cfg.Logger
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	t, err := dialects.ParseTable(p.cfg.Table)
	if err != nil {
		p.cfgErr = fmt.Errorf("%w: Table: %w", ErrInvalidConfig, err)
	}
	p.table = t
	if p.cfg.Shards < 1 || p.cfg.Shards > 1<<16 {
		p.cfgErr = errors.Join(p.cfgErr, fmt.Errorf("%w: Shards = %d, want 1..65536", ErrInvalidConfig, p.cfg.Shards))
	}
	if p.cfg.MaxPayloadBytes < 0 || p.cfg.MaxPayloadBytes > maxMaxPayloadBytes {
		p.cfgErr = errors.Join(p.cfgErr, fmt.Errorf("%w: MaxPayloadBytes = %d, want 0 (the default, %d) to %d",
			ErrInvalidConfig, p.cfg.MaxPayloadBytes, DefaultMaxPayloadBytes, maxMaxPayloadBytes))
	}
	return p
}

// Name implements gorm.Plugin.
func (p *Plugin) Name() string { return PluginName }

// Table returns the outbox table name.
func (p *Plugin) Table() string { return p.table.String() }

// Shards returns the configured shard count.
func (p *Plugin) Shards() int { return p.cfg.Shards }

// Dialect returns the dialect in use; nil before Initialize.
func (p *Plugin) Dialect() dialects.Dialect { return p.dialect }

// dialectFor returns the outbox dialect of db (see pick.For), or an error
// wrapping ErrUnsupportedDialect.
func dialectFor(db *gorm.DB) (dialects.Dialect, error) {
	sqlDB, _ := db.DB() // nil for a DryRun or mock pool: the defaults then
	d, err := pick.For(db.Dialector.Name(), sqlDB)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsupportedDialect, err)
	}
	return d, nil
}

// Initialize implements gorm.Plugin: it checks the configuration and the
// dialect and registers the capture callbacks.
func (p *Plugin) Initialize(db *gorm.DB) error {
	if p.cfgErr != nil {
		return p.cfgErr
	}
	if p.db != nil {
		// Initialized again, for another *gorm.DB: gorm.Open runs the
		// plugins of the Config it is given, and dbresolver opens its
		// sources and replicas with the parent's Config. Capture there too
		// (a replica never writes, so it costs nothing), on the same kind
		// of database; Migrate and Validate keep using the first.
		if p.cfg.Dialect == nil {
			if d, err := dialectFor(db); err != nil || reflect.TypeOf(d) != reflect.TypeOf(p.dialect) {
				return fmt.Errorf("%w: this Plugin serves %s and cannot also serve a %s *gorm.DB; create one Plugin per database",
					ErrInvalidConfig, p.dialect.Name(), db.Dialector.Name())
			}
		}
		return p.register(db)
	}
	p.dialect = p.cfg.Dialect
	if p.dialect == nil {
		d, err := dialectFor(db)
		if err != nil {
			return err
		}
		p.dialect = d
	}
	p.caps = p.dialect.Capabilities()
	p.db = db
	if err := p.Validate(p.cfg.Models...); err != nil {
		return fmt.Errorf("%w: Models: %w", ErrInvalidConfig, err)
	}
	return p.register(db)
}

// Migrate creates or upgrades the outbox table. It is idempotent and safe to
// run from several processes at once.
func (p *Plugin) Migrate(ctx context.Context) error {
	sqlDB, err := p.sqlDB()
	if err != nil {
		return err
	}
	if err := p.dialect.Migrate(ctx, sqlDB, p.table); err != nil {
		return err
	}
	if p.caps.Notify {
		return p.dialect.SetNotify(ctx, sqlDB, p.table, !p.cfg.DisableNotify)
	}
	return nil
}

// timesKnown reports whether the database stores a time written as the Go
// value truncated to a precision it declares, so that an event can show
// the committed value without reading it back.
func (p *Plugin) timesKnown() bool {
	return p.caps.TimesTruncated && p.caps.TimePrecision > 0
}

func (p *Plugin) sqlDB() (*sql.DB, error) {
	if p.db == nil {
		return nil, ErrNotRegistered
	}
	return p.db.DB()
}

// Validate parses the outbox tags of models (values or pointers to them) and
// returns every problem found, each naming its model and field. Run it at
// start-up to fail fast; the same checks run on a model's first write.
// A model that is not an event source is not an error.
func (p *Plugin) Validate(models ...any) error {
	if p.db == nil {
		return ErrNotRegistered
	}
	var errs []error
	for _, v := range models {
		sch, err := parseSchema(p.db, v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: %T: %w", ErrInvalidTag, v, err))
			continue
		}
		if _, err := p.models.lookup(sch); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// from returns the plugin registered on db.
func from(db *gorm.DB) (*Plugin, error) {
	if db == nil || db.Config == nil {
		return nil, ErrNotRegistered
	}
	v, ok := db.Config.Plugins[PluginName]
	if !ok {
		return nil, ErrNotRegistered
	}
	p, ok := v.(*Plugin)
	if !ok {
		return nil, ErrNotRegistered
	}
	return p, nil
}

// inTransaction reports whether pool is a transaction (GORM's own, the
// caller's, or a prepared-statement wrapper of one).
func inTransaction(pool gorm.ConnPool) bool {
	c, ok := pool.(gorm.TxCommitter)
	return ok && c != nil
}
