package gormoutbox

import (
	"reflect"
	"regexp"
	"strings"
	"sync"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"
)

// Writes through db.Table("t") carry no model: the plugin must know which
// tagged model, if any, owns t. It knows the models it has parsed
// (Config.Models, Validate, a first write through the model); for a table
// it does not know yet, it looks through the schemas GORM itself has
// parsed on this *gorm.DB — AutoMigrate, queries, any earlier statement —
// so that a service that migrated its models and then writes through
// db.Table is captured without listing anything.

// modelForTable returns the tagged model whose table is name, or nil.
func (p *Plugin) modelForTable(db *gorm.DB, name string) *model {
	if m := p.models.byTable(name); m != nil {
		return m
	}
	cache := gormSchemaCache(db)
	if cache == nil {
		return nil
	}
	var types []reflect.Type
	cache.Range(func(_, v any) bool {
		if s, ok := v.(*schema.Schema); ok && s != nil && s.Table == name && s.ModelType != nil {
			types = append(types, s.ModelType)
		}
		return true
	})
	for _, t := range types {
		// Parse again through GORM, which waits for a schema another
		// goroutine is still initialising.
		sch, err := parseSchema(db, reflect.New(t).Interface())
		if err != nil || sch.Table != name {
			continue
		}
		if m, err := p.models.lookup(sch); err == nil && m != nil {
			return m
		}
	}
	return nil
}

// gormSchemaCache returns GORM's schema cache of db (gorm.Config's
// unexported cacheStore), or nil when this GORM version has none by that
// name and type; then only the models the plugin has parsed are known.
func gormSchemaCache(db *gorm.DB) *sync.Map {
	if db == nil || db.Config == nil {
		return nil
	}
	f := reflect.ValueOf(db.Config).Elem().FieldByName("cacheStore")
	if !f.IsValid() || f.Type() != reflect.TypeOf((*sync.Map)(nil)) || f.IsNil() {
		return nil
	}
	return (*sync.Map)(f.UnsafePointer())
}

// tableExprName matches the table a db.Table("…") expression starts with:
// `members m`, `"public"."members" AS m`, `members`.
var tableExprName = regexp.MustCompile("^\\s*[`\"]?([\\w$]+)[`\"]?(?:\\.[`\"]?([\\w$]+)[`\"]?)?")

// schemalessModel returns the tagged model a write through db.Table("…")
// without a model writes to, or nil. A schema-qualified name
// ("public.members") finds the model of its table; an alias or an
// expression over a tagged table ("members m") is refused, since the
// plugin's reads could not name the table.
func (p *Plugin) schemalessModel(db *gorm.DB, o op) (*model, error) {
	stmt := db.Statement
	if m := p.modelForTable(db, stmt.Table); m != nil {
		return m, nil
	}
	if i := strings.LastIndexByte(stmt.Table, '.'); i >= 0 && stmt.TableExpr == nil {
		if m := p.modelForTable(db, stmt.Table[i+1:]); m != nil && !strings.Contains(m.schema.Table, ".") {
			return m, nil
		}
	}
	if stmt.TableExpr == nil {
		return nil, nil
	}
	sm := tableExprName.FindStringSubmatch(stmt.TableExpr.SQL)
	if sm == nil {
		return nil, nil
	}
	name := sm[1]
	if sm[2] != "" {
		name = sm[2]
	}
	if m := p.modelForTable(db, name); m != nil {
		return nil, uncaptured(m.name, o, "through db.Table(\""+stmt.TableExpr.SQL+"\"), an alias or expression of its table",
			"write through db.Table(\""+m.schema.Table+"\") or the model")
	}
	return nil, nil
}
