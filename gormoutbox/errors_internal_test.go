package gormoutbox

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"gorm.io/gorm/schema"
)

type badKeyModel struct {
	Source `outbox:"topic:bad;key:Missing"`
	ID     uint `gorm:"primaryKey"`
}

type badTopicModel struct {
	Source `outbox:"topic:no spaces"`
	ID     uint `gorm:"primaryKey"`
}

// A tag error is a *TagError naming the model and the field, still
// ErrInvalidTag for errors.Is, with the message it always had.
func TestTagErrorFields(t *testing.T) {
	for _, c := range []struct {
		model          any
		name, field    string
		problem, error string
	}{
		{&badKeyModel{}, "badKeyModel", "Missing", "key field does not exist",
			"gormoutbox: invalid outbox tag: model badKeyModel field Missing: key field does not exist"},
		{&badTopicModel{}, "badTopicModel", "", `topic "no spaces" is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-])`,
			`gormoutbox: invalid outbox tag: model badTopicModel: topic "no spaces" is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-])`},
	} {
		sch, err := schema.Parse(c.model, &sync.Map{}, schema.NamingStrategy{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = parseModel(sch)
		err = fmt.Errorf("wrapped: %w", errors.Join(err)) // as Validate and a write return it
		var te *TagError
		if !errors.As(err, &te) {
			t.Fatalf("%s: %v is not a *TagError", c.name, err)
		}
		if te.Model != c.name || te.Field != c.field || te.Problem != c.problem {
			t.Errorf("%s: TagError %+v, want model %q field %q problem %q", c.name, *te, c.name, c.field, c.problem)
		}
		if !errors.Is(err, ErrInvalidTag) {
			t.Errorf("%s: errors.Is(%v, ErrInvalidTag) = false", c.name, err)
		}
		if te.Error() != c.error {
			t.Errorf("%s: message %q, want %q", c.name, te.Error(), c.error)
		}
	}
}

// A refused write is an *UncapturedError with its parts, still
// ErrUncapturedWrite for errors.Is, with the message it always had.
func TestUncapturedErrorFields(t *testing.T) {
	err := fmt.Errorf("wrapped: %w", uncaptured("Inventory", opDelete, "without a WHERE clause", "add a condition"))
	var ue *UncapturedError
	if !errors.As(err, &ue) {
		t.Fatalf("%v is not an *UncapturedError", err)
	}
	want := UncapturedError{Model: "Inventory", Op: "delete", Reason: "without a WHERE clause", WayOut: "add a condition"}
	if *ue != want {
		t.Errorf("UncapturedError %+v, want %+v", *ue, want)
	}
	if !errors.Is(err, ErrUncapturedWrite) {
		t.Errorf("errors.Is(%v, ErrUncapturedWrite) = false", err)
	}
	const msg = `gormoutbox: write cannot be captured: delete of Inventory without a WHERE clause; add a condition, or opt out explicitly with db.Clauses(gormoutbox.Skip("reason"))`
	if ue.Error() != msg {
		t.Errorf("message %q, want %q", ue.Error(), msg)
	}
	if errors.Is(err, ErrInvalidTag) || errors.As(err, new(*TagError)) {
		t.Errorf("%v passes for a tag error", err)
	}
}
