package integration

import (
	"errors"
	"math"
	"strings"
	"testing"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

type UnknownSetting struct {
	gormoutbox.Source `outbox:"topic:x;topc:y"`
	ID                uint
}

type MissingTopic struct {
	gormoutbox.Source `outbox:"aggregate:thing"`
	ID                uint
}

type BadKeyField struct {
	gormoutbox.Source `outbox:"topic:x;key:Nope"`
	ID                uint
}

type BadFieldTag struct {
	gormoutbox.Source `outbox:"topic:x"`
	ID                uint
	Name              string `outbox:"exclude"`
}

type TagWithoutSource struct {
	ID   uint
	Name string `outbox:"key"`
}

type BadTopic struct {
	gormoutbox.Source `outbox:"topic:has space"`
	ID                uint
}

type BadEvents struct {
	gormoutbox.Source `outbox:"topic:x;events:create,upsert"`
	ID                uint
}

type NaNPrice struct {
	gormoutbox.Source `outbox:"topic:prices"`
	ID                uint `gorm:"primaryKey"`
	Price             float64
}

func TestBadTagsNameModelAndField(t *testing.T) {
	db, p := setup(t, testenv.Dialects()[0], nil, gormoutbox.Config{})
	cases := []struct {
		model any
		want  []string
	}{
		{&UnknownSetting{}, []string{"UnknownSetting", `"topc"`}},
		{&MissingTopic{}, []string{"MissingTopic", "topic"}},
		{&BadKeyField{}, []string{"BadKeyField", "Nope", "does not exist"}},
		{&BadFieldTag{}, []string{"BadFieldTag", "field Name", `"exclude"`}},
		{&TagWithoutSource{}, []string{"TagWithoutSource", "field Name", "gormoutbox.Source"}},
		{&BadTopic{}, []string{"BadTopic", `"has space"`}},
		{&BadEvents{}, []string{"BadEvents", `"upsert"`}},
	}
	for _, c := range cases {
		err := p.Validate(c.model)
		if !errors.Is(err, gormoutbox.ErrInvalidTag) {
			t.Errorf("Validate(%T) = %v, want ErrInvalidTag", c.model, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Validate(%T) = %q, want it to mention %s", c.model, err, w)
			}
		}
	}
	// All problems at once, joined.
	err := p.Validate(&UnknownSetting{}, &Inventory{}, &MissingTopic{}, &Plain{})
	if err == nil || !strings.Contains(err.Error(), "UnknownSetting") || !strings.Contains(err.Error(), "MissingTopic") {
		t.Fatalf("Validate(several) = %v", err)
	}
	if err := p.Validate(&Inventory{}, &Plain{}, &SoftItem{}, &Account{}); err != nil {
		t.Fatalf("Validate(good models) = %v", err)
	}

	// The same error on the first write, and the write does not happen.
	if err := db.AutoMigrate(&UnknownSetting{}); err != nil {
		t.Fatal(err)
	}
	err = db.Create(&UnknownSetting{}).Error
	if !errors.Is(err, gormoutbox.ErrInvalidTag) {
		t.Fatalf("Create(bad model) = %v, want ErrInvalidTag", err)
	}
	if te := (*gormoutbox.TagError)(nil); !errors.As(err, &te) || te.Model != "UnknownSetting" || te.Problem == "" {
		t.Errorf("Create(bad model) = %v, want a *gormoutbox.TagError naming UnknownSetting", err)
	}
	if n := count(t, db, &UnknownSetting{}); n != 0 {
		t.Fatalf("bad model written: %d rows", n)
	}
}

func TestBadConfig(t *testing.T) {
	d := testenv.Dialects()[0]
	for _, table := range []string{"out-box", "x;drop table y", "a.b.c", "1abc", "", strings.Repeat("t", 60)} {
		if table == "" {
			continue // empty means the default
		}
		db := d.Open(t, nil)
		err := db.Use(gormoutbox.New(gormoutbox.Config{Table: table}))
		if !errors.Is(err, gormoutbox.ErrInvalidConfig) || !strings.Contains(err.Error(), "Table") {
			t.Errorf("Table %q: Use = %v, want ErrInvalidConfig naming Table", table, err)
		}
	}
	db := d.Open(t, nil)
	if err := db.Use(gormoutbox.New(gormoutbox.Config{Shards: -1})); !errors.Is(err, gormoutbox.ErrInvalidConfig) || !strings.Contains(err.Error(), "Shards") {
		t.Errorf("Shards -1: %v", err)
	}
}

func TestUnsupportedDialect(t *testing.T) {
	db, err := gorm.Open(fakeDialector{name: "sqlite"}, &gorm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Use(gormoutbox.New(gormoutbox.Config{}))
	if !errors.Is(err, gormoutbox.ErrUnsupportedDialect) || !strings.Contains(err.Error(), `"sqlite"`) {
		t.Fatalf("Use on sqlite = %v, want ErrUnsupportedDialect naming it", err)
	}
}

func TestUnencodablePayloadRollsBack(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &NaNPrice{})
		if err := db.Create(&NaNPrice{Price: 1.5}).Error; err != nil {
			t.Fatal(err)
		}
		good := NaNPrice{Price: 2}
		if err := db.Create(&good).Error; err != nil {
			t.Fatal(err)
		}
		// NaN cannot be stored in MySQL at all, so the encode failure is
		// shown with +Inf on an update's after-image on PostgreSQL and a
		// create on both.
		err := db.Create(&NaNPrice{Price: math.Inf(1)}).Error
		if err == nil {
			t.Fatal("Create with +Inf succeeded")
		}
		if d.Name == "postgres" {
			if !errors.Is(err, gormoutbox.ErrEncodePayload) || !strings.Contains(err.Error(), "NaNPrice") || !strings.Contains(err.Error(), "Price") {
				t.Fatalf("Create(+Inf) = %v, want ErrEncodePayload naming model and field", err)
			}
		}
		if n := count(t, db, &NaNPrice{}); n != 2 {
			t.Fatalf("%d rows, want 2: the failed write must not be committed", n)
		}
		checkRows(t, readOutbox(t, db, ""), want{Type: "NaNPriceCreated"}, want{Type: "NaNPriceCreated"})
	})
}
