package gormoutbox

import "errors"

// Errors returned by the plugin. Each error carries a message that names the
// model, field, option or value at fault; test for the kind with errors.Is.
var (
	// ErrUnsupportedDialect: the GORM dialector is not PostgreSQL or MySQL.
	ErrUnsupportedDialect = errors.New("gormoutbox: unsupported dialect")
	// ErrInvalidConfig: a Config field has a value the plugin cannot use.
	ErrInvalidConfig = errors.New("gormoutbox: invalid config")
	// ErrInvalidTag: a model's outbox tags are wrong (unknown setting,
	// missing topic, key field that does not exist, ...).
	ErrInvalidTag = errors.New("gormoutbox: invalid outbox tag")
	// ErrInvalidEvent: an event given to Publish is incomplete or malformed.
	ErrInvalidEvent = errors.New("gormoutbox: invalid event")
	// ErrEncodePayload: an entity or event payload cannot be encoded.
	ErrEncodePayload = errors.New("gormoutbox: cannot encode payload")
	// ErrNoTransaction: Publish was called outside a transaction.
	ErrNoTransaction = errors.New("gormoutbox: not in a transaction")
	// ErrUncapturedWrite: the write to a tagged model is of a kind the
	// plugin cannot capture; it was refused so that no committed change
	// goes without its event. The message says how to proceed.
	ErrUncapturedWrite = errors.New("gormoutbox: write cannot be captured")
	// ErrNotRegistered: the plugin is not registered on this *gorm.DB.
	ErrNotRegistered = errors.New("gormoutbox: plugin not registered (call db.Use(gormoutbox.New(...)) first)")
)
