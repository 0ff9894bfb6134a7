package gormoutbox

import (
	"encoding/json"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"
)

// Source marks a GORM model as an event source. Embed it and put the
// model's outbox settings in its tag:
//
//	type Inventory struct {
//		gormoutbox.Source `outbox:"topic:inventory;aggregate:inventory;events:create,update,delete"`
//		ID        uint   `gorm:"primaryKey"`
//		SKU       string `outbox:"key"`
//		Quantity  int
//		CostPrice int    `outbox:"-"`
//	}
//
// Settings, separated by ";", each "name:value":
//
//   - topic (required): the Kafka topic, letters, digits, '.', '_' and '-'.
//   - aggregate: the aggregate type; default the model's Go type name.
//   - events: the operations captured, any of create, update, delete;
//     default all three.
//   - key: the field (Go or column name) whose value is the message key;
//     several fields separated by ",". Default: the fields tagged
//     `outbox:"key"`, else the primary key. A composite key is sent as a
//     JSON array of its values.
//   - create_type, update_type, delete_type, purge_type: event types; default
//     <Model>Created, <Model>Updated, <Model>Deleted and <Model>Purged.
//     Purge is the hard delete (Unscoped) of a soft-deletable model; on a
//     model without gorm.DeletedAt every delete is a delete.
//   - version: the payload schema version, a positive integer, sent as the
//     "schema-version" header; default none.
//   - ack: a topic on which consumers acknowledge each event (see
//     Acknowledge and package ack); default none (no answer awaited).
//
// Field tags: `outbox:"key"` makes the field (part of) the message key;
// `outbox:"-"` leaves it out of the payload.
//
// Source has no fields: it adds no column and nothing to the JSON payload.
type Source struct{}

var (
	sourceType = reflect.TypeOf(Source{})
	timeType   = reflect.TypeOf(time.Time{})
)

type op uint8

const (
	opCreate op = 1 << iota
	opUpdate
	opDelete
)

func (o op) String() string {
	switch o {
	case opCreate:
		return "create"
	case opUpdate:
		return "update"
	case opDelete:
		return "delete"
	}
	return "?"
}

// model is the parsed outbox configuration of one tagged GORM model.
type model struct {
	name          string // Go type name, for messages and defaults
	schema        *schema.Schema
	topic         string
	aggregateType string
	ops           op
	createType    string
	updateType    string
	deleteType    string
	purgeType     string
	version       string
	ackTopic      string
	keyFields     []*schema.Field
	// keyLocked: the key is neither the primary key nor unique, so rows of
	// different entities share it and their writers must lock it
	// (dialects.Record.LockKey) to take their ids in commit order.
	keyLocked  bool
	pkFields   []*schema.Field
	pkDBNames  []string
	softDelete bool
	// dbDefaults are fields whose default the database computes (not a
	// literal GORM can fill in); without RETURNING they need a reload.
	dbDefaults []*schema.Field
	// timeFields hold time.Time or *time.Time values, which PostgreSQL
	// stores rounded to the microsecond.
	timeFields []*schema.Field
	// uniques are the unique indexes and columns, which find the rows
	// of a create from maps that did not get their key back.
	uniques [][]*schema.Field
	enc     encoder
}

var topicRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

func validTopic(t string) bool { return topicRE.MatchString(t) && t != "." && t != ".." }

// knownSettings lists the settings of an outbox tag, for error messages.
const knownSettings = "topic, aggregate, events, key, create_type, update_type, delete_type, purge_type, version, ack"

// knownSetting reports whether k is a setting of an outbox tag.
func knownSetting(k string) bool {
	switch k {
	case "topic", "aggregate", "events", "key", "create_type", "update_type", "delete_type", "purge_type", "version", "ack":
		return true
	}
	return false
}

// findSource returns the tag of the embedded Source, looking through
// anonymous embedded structs.
func findSource(t reflect.Type) (tag string, found bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Type == sourceType {
			return f.Tag.Get("outbox"), true
		}
		if f.Anonymous {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if tag, ok := findSource(ft); ok {
					return tag, true
				}
			}
		}
	}
	return "", false
}

// parseModel reads the outbox configuration of sch. It returns nil, nil for
// a model that is not an event source.
func parseModel(sch *schema.Schema) (*model, error) {
	tag, tagged := findSource(sch.ModelType)
	name := sch.ModelType.Name()
	if name == "" {
		name = sch.Name
	}
	var fieldKeys []*schema.Field
	excluded := map[*schema.Field]bool{}
	for _, f := range sch.Fields {
		v, ok := f.StructField.Tag.Lookup("outbox")
		if !ok {
			continue
		}
		if !tagged {
			return nil, tagError(name, f.Name, "has an outbox tag but the model does not embed gormoutbox.Source (which carries the topic)")
		}
		switch strings.TrimSpace(v) {
		case "key":
			if f.DBName == "" || !f.Readable {
				return nil, tagError(name, f.Name, "outbox:\"key\" on a field that is not a column")
			}
			fieldKeys = append(fieldKeys, f)
		case "-":
			excluded[f] = true
		default:
			return nil, tagError(name, f.Name, "unknown field setting %q (want \"key\" or \"-\")", v)
		}
	}
	if !tagged {
		return nil, nil
	}

	m := &model{name: name, schema: sch, aggregateType: name, ops: opCreate | opUpdate | opDelete}
	var keyNames []string
	seen := map[string]bool{}
	for _, part := range strings.Split(tag, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, ":")
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		if !knownSetting(k) {
			return nil, tagError(name, "", "unknown outbox setting %q (known: %s)", k, knownSettings)
		}
		if seen[k] {
			return nil, tagError(name, "", "outbox setting %q given twice", k)
		}
		seen[k] = true
		if v == "" {
			return nil, tagError(name, "", "outbox setting %q has no value", k)
		}
		switch k {
		case "topic":
			if !validTopic(v) {
				return nil, tagError(name, "", "topic %q is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-])", v)
			}
			m.topic = v
		case "aggregate":
			m.aggregateType = v
		case "events":
			m.ops = 0
			for _, e := range strings.Split(v, ",") {
				switch strings.ToLower(strings.TrimSpace(e)) {
				case "create":
					m.ops |= opCreate
				case "update":
					m.ops |= opUpdate
				case "delete":
					m.ops |= opDelete
				default:
					return nil, tagError(name, "", "events: unknown operation %q (want create, update, delete)", strings.TrimSpace(e))
				}
			}
		case "key":
			for _, kn := range strings.Split(v, ",") {
				keyNames = append(keyNames, strings.TrimSpace(kn))
			}
		case "create_type":
			m.createType = v
		case "update_type":
			m.updateType = v
		case "delete_type":
			m.deleteType = v
		case "purge_type":
			m.purgeType = v
		case "version":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return nil, tagError(name, "", "version %q is not a positive integer", v)
			}
			m.version = v
		case "ack":
			if !validTopic(v) {
				return nil, tagError(name, "", "ack topic %q is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-])", v)
			}
			m.ackTopic = v
		}
	}
	if m.topic == "" {
		return nil, tagError(name, "", "missing required setting topic (e.g. `outbox:\"topic:%s\"`)", strings.ToLower(name))
	}
	if len(sch.PrimaryFields) == 0 {
		return nil, tagError(name, "", "an event source needs a primary key (the aggregate id)")
	}
	m.pkFields = sch.PrimaryFields
	for _, f := range m.pkFields {
		m.pkDBNames = append(m.pkDBNames, f.DBName)
	}
	switch {
	case len(keyNames) > 0 && len(fieldKeys) > 0:
		return nil, tagError(name, "", "message key given both by the key setting and by `outbox:\"key\"` field tags; use one")
	case len(keyNames) > 0:
		for _, kn := range keyNames {
			f := sch.LookUpField(kn)
			if f == nil {
				return nil, tagError(name, kn, "key field does not exist")
			}
			if f.DBName == "" || !f.Readable {
				return nil, tagError(name, kn, "key field is not a column")
			}
			m.keyFields = append(m.keyFields, f)
		}
	case len(fieldKeys) > 0:
		m.keyFields = fieldKeys
	default:
		m.keyFields = m.pkFields
	}
	m.keyLocked = !sameFields(m.keyFields, m.pkFields) && !uniqueFields(sch, m.keyFields)
	if m.createType == "" {
		m.createType = name + "Created"
	}
	if m.updateType == "" {
		m.updateType = name + "Updated"
	}
	if m.deleteType == "" {
		m.deleteType = name + "Deleted"
	}
	if m.purgeType == "" {
		m.purgeType = name + "Purged"
	}
	m.softDelete = len(sch.DeleteClauses) > 0
	for _, f := range sch.Fields {
		if f.HasDefaultValue && f.DefaultValueInterface == nil && f.DBName != "" && f != sch.PrioritizedPrimaryField {
			m.dbDefaults = append(m.dbDefaults, f)
		}
	}
	for _, f := range sch.Fields {
		if f.DBName != "" && f.IndirectFieldType == timeType {
			m.timeFields = append(m.timeFields, f)
		}
	}
	m.uniques = uniqueKeys(sch)
	enc, err := newEncoder(sch, name, excluded)
	if err != nil {
		return nil, err
	}
	m.enc = enc
	return m, nil
}

// registry caches parsed models by Go type. Each model is parsed once: the
// first caller parses while concurrent callers wait on the entry's Once.
type registry struct {
	entries sync.Map // reflect.Type -> *regEntry
	tables  sync.Map // table name -> *model, for writes made without the model
	parses  atomic.Int64
}

type regEntry struct {
	once sync.Once
	m    *model
	err  error
}

func (r *registry) lookup(sch *schema.Schema) (*model, error) {
	v, ok := r.entries.Load(sch.ModelType)
	if !ok {
		v, _ = r.entries.LoadOrStore(sch.ModelType, &regEntry{})
	}
	e := v.(*regEntry)
	e.once.Do(func() {
		r.parses.Add(1)
		e.m, e.err = parseModel(sch)
		if e.m != nil {
			r.tables.Store(sch.Table, e.m)
		}
	})
	return e.m, e.err
}

// byTable returns the tagged model whose table is name, among the models
// parsed so far (see Config.Models), or nil.
func (r *registry) byTable(name string) *model {
	if v, ok := r.tables.Load(name); ok {
		return v.(*model)
	}
	return nil
}

// parse resolves value (a model, a pointer to one, or a slice of them)
// through GORM's schema cache.
func parseSchema(db *gorm.DB, value any) (*schema.Schema, error) {
	stmt := &gorm.Statement{DB: db}
	if err := stmt.Parse(value); err != nil {
		return nil, err
	}
	return stmt.Schema, nil
}

// jsonName returns the top-level JSON member name of f in the model's
// encoding, and false when f is nested under another member or not encoded.
func jsonName(modelType reflect.Type, f *schema.Field) (string, bool) {
	t := modelType
	name := ""
	for i, bn := range f.BindNames {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return "", false
		}
		sf, ok := t.FieldByName(bn)
		if !ok {
			return "", false
		}
		tag := sf.Tag.Get("json")
		if tag == "-" {
			return "", false
		}
		tn, _, _ := strings.Cut(tag, ",")
		last := i == len(f.BindNames)-1
		if !last {
			ft := sf.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if sf.Anonymous && tn == "" && ft.Kind() == reflect.Struct {
				t = sf.Type // flattened into the parent object
				continue
			}
			return "", false // nested under its own member
		}
		if tn != "" {
			name = tn
		} else {
			name = sf.Name
		}
	}
	return name, name != ""
}

var jsonMarshalerType = reflect.TypeOf((*json.Marshaler)(nil)).Elem()
