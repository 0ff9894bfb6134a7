package gormoutbox

import (
	"reflect"
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
