package inbox

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// printings renders v in every way a Config is likely to be printed or
// logged.
func printings(t *testing.T, v any) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d", "%x"} {
		out[verb] = fmt.Sprintf(verb, v)
	}
	out["Sprint"] = fmt.Sprint(v)
	out["Sprintln"] = fmt.Sprintln("cfg", v)
	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("config", "cfg", v)
	slog.New(slog.NewJSONHandler(&js, nil)).Info("config", "cfg", v)
	out["slog text"], out["slog json"] = text.String(), js.String()
	return out
}

func TestConfigPrintsNoSASLPassword(t *testing.T) {
	sc, err := scram.Mechanism(scram.SHA512, "outbox", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	for _, mech := range []sasl.Mechanism{plain.Mechanism{Username: "outbox", Password: "s3cret"}, sc} {
		cfg := Config{Brokers: []string{"kafka-1:9093"}, GroupID: "orders", Topics: []string{"inventory"},
			Dialer: &kafkago.Dialer{ClientID: "orders-svc", Timeout: 10 * time.Second, TLS: &tls.Config{}, SASLMechanism: mech},
			Logger: slog.Default(), EventID: DefaultEventID}
		for _, v := range []any{cfg, &cfg} {
			for how, s := range printings(t, v) {
				if strings.Contains(s, "s3cret") {
					t.Errorf("%s of a %T with %s: the password is printed: %s", how, v, mech.Name(), s)
				}
				if !strings.Contains(s, mech.Name()) && how != "%x" && how != "%q" && how != "%d" {
					t.Errorf("%s of a %T: the SASL mechanism %s is not shown: %s", how, v, mech.Name(), s)
				}
			}
		}
	}
	// Without a Dialer, as with one.
	s := fmt.Sprintf("%+v", Config{GroupID: "g"})
	if !strings.Contains(s, "Dialer:<nil>") || !strings.Contains(s, "GroupID:g") {
		t.Errorf("%%+v of a Config without a Dialer: %s", s)
	}
	var js bytes.Buffer
	slog.New(slog.NewJSONHandler(&js, nil)).Info("config", "cfg", Config{GroupID: "g"})
	if !strings.Contains(js.String(), `"group_id":"g"`) {
		t.Errorf("slog JSON of a Config: %s", js.String())
	}
}

// noMethods is Config without its methods: fmt prints it its own way.
type noMethods Config

// Apart from the Dialer, Config prints with %v, %+v and %#v exactly as fmt
// would print it (other verbs print as %v).
func TestConfigFormatIsFmts(t *testing.T) {
	cfg := Config{Brokers: []string{"a:1", "b:2"}, GroupID: "g", Topics: []string{"t"}, Table: "inbox", Workers: 2,
		BatchSize: 100, MinBackoff: time.Second, StartOffset: kafkago.LastOffset, Logger: slog.Default(),
		EventID: DefaultEventID, AfterCommit: func(context.Context, []*Message) {}}
	for _, verb := range []string{"%v", "%+v", "%#v"} {
		got, want := fmt.Sprintf(verb, cfg), fmt.Sprintf(verb, noMethods(cfg))
		want = strings.Replace(want, "inbox.noMethods{", "inbox.Config{", 1)
		if got != want {
			t.Errorf("%s:\n got %s\nwant %s", verb, got, want)
		}
	}
	if got, want := cfg.String(), fmt.Sprintf("%+v", noMethods(cfg)); got != want {
		t.Errorf("String:\n got %s\nwant %s", got, want)
	}
}
