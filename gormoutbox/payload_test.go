package gormoutbox

import (
	"testing"
)

func TestDropMembers(t *testing.T) {
	drop := map[string]bool{"CostPrice": true, "Items": true, `q"uote`: true}
	cases := []struct{ in, want string }{
		{`{"ID":1,"CostPrice":5,"SKU":"a"}`, `{"ID":1,"SKU":"a"}`},
		{`{"CostPrice":5}`, `{}`},
		{`{}`, `{}`},
		{`{"ID":1,"Items":[{"CostPrice":1},{"x":"}"}],"Z":null}`, `{"ID":1,"Z":null}`},
		{`{"S":"a,\"b\":{","CostPrice":{"n":[1,2]},"T":true}`, `{"S":"a,\"b\":{","T":true}`},
		{`{"q\"uote":1,"k":2}`, `{"k":2}`},
		{`{"ID":1,"Nested":{"CostPrice":3}}`, `{"ID":1,"Nested":{"CostPrice":3}}`},
	}
	for _, c := range cases {
		got, err := dropMembers([]byte(c.in), drop)
		if err != nil {
			t.Errorf("dropMembers(%s): %v", c.in, err)
			continue
		}
		if string(got) != c.want {
			t.Errorf("dropMembers(%s) = %s, want %s", c.in, got, c.want)
		}
	}
	for _, bad := range []string{`[1,2]`, `"s"`, `{"a":1`, `{"a`} {
		if _, err := dropMembers([]byte(bad), drop); err == nil {
			t.Errorf("dropMembers(%s): no error", bad)
		}
	}
}

func FuzzDropMembers(f *testing.F) {
	f.Add(`{"ID":1,"CostPrice":5,"SKU":"a"}`)
	f.Add(`{"S":"a,\"b\":{","CostPrice":{"n":[1,2]},"T":true}`)
	f.Fuzz(func(t *testing.T, s string) {
		// Must never panic, whatever the input.
		_, _ = dropMembers([]byte(s), map[string]bool{"CostPrice": true})
	})
}

func TestKeyString(t *testing.T) {
	one := 7
	cases := []struct {
		in   []any
		want string
	}{
		{[]any{uint(42)}, "42"},
		{[]any{"abc"}, "abc"},
		{[]any{&one}, "7"},
		{[]any{"eu", 7}, `["eu","7"]`},
		{[]any{"a\"b", int64(-1)}, `["a\"b","-1"]`},
		{[]any{[]byte("raw")}, "raw"},
	}
	for _, c := range cases {
		if got := keyString(c.in); got != c.want {
			t.Errorf("keyString(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}
