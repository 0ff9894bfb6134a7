package kafka_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/go-outbox/outbox/kafka"
)

// The Dialer that Config.Dialer builds (for inbox.Config.Dialer) prints
// and logs without the password: kafka-go's plain.Mechanism would print
// it from %v of the Dialer.
func TestDialerDoesNotPrintThePassword(t *testing.T) {
	const pw = "s3cret"
	for _, mech := range []string{kafka.SASLPlain, kafka.SASLScramSHA256, kafka.SASLScramSHA512} {
		d, err := kafka.Config{SASL: kafka.SASL{Mechanism: mech, Username: "outbox-user", Password: pw}}.Dialer()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		slog.New(slog.NewTextHandler(&buf, nil)).Info("m", "dialer", d, "mech", d.SASLMechanism)
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("m", "mech", d.SASLMechanism)
		js, err := json.Marshal(d.SASLMechanism)
		if err != nil {
			t.Fatal(err)
		}
		outs := map[string]string{
			"%v":        fmt.Sprintf("%v", d),
			"%+v":       fmt.Sprintf("%+v", d),
			"%#v":       fmt.Sprintf("%#v", d),
			"*d %+v":    fmt.Sprintf("%+v", *d),
			"mech %d":   fmt.Sprintf("%d", d.SASLMechanism),
			"mech %x":   fmt.Sprintf("%x", d.SASLMechanism),
			"mech %#v":  fmt.Sprintf("%#v", d.SASLMechanism),
			"Sprint":    fmt.Sprint(d.SASLMechanism),
			"slog":      buf.String(),
			"mech json": string(js),
		}
		for how, s := range outs {
			if strings.Contains(s, pw) {
				t.Errorf("%s: %s of a %s Dialer shows the password", how, s, mech)
			}
			if !strings.Contains(s, "outbox-user") && how != "mech %x" {
				t.Errorf("%s: %s of a %s Dialer does not show the user", how, s, mech)
			}
		}
		if d.SASLMechanism.Name() != mech {
			t.Errorf("mechanism name %q, want %q", d.SASLMechanism.Name(), mech)
		}
	}
}
