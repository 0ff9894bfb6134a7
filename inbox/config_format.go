package inbox

import (
	"fmt"
	"io"
	"log/slog"
	"reflect"

	kafkago "github.com/segmentio/kafka-go"
)

// Config prints and logs without secrets. Its Dialer may hold SASL
// credentials in the clear (kafka-go's plain.Mechanism has a Password
// field, and fmt prints it from a *kafkago.Dialer), so wherever a Config
// is printed (fmt's %v, %+v, %#v, %s; fmt.Sprint; log/slog) the Dialer is
// shown as its client id, timeout, whether TLS is on and the name of the
// SASL mechanism, never the mechanism's fields. The other fields print as
// fmt prints them.

// Format implements fmt.Formatter: fmt's own rendering of the struct (with
// field names for %+v, Go syntax for %#v), the Dialer redacted.
func (c Config) Format(f fmt.State, verb rune) {
	plus, sharp := f.Flag('+'), verb == 'v' && f.Flag('#')
	sep, field := " ", "%v"
	switch {
	case sharp:
		sep, field = ", ", "%#v"
		_, _ = io.WriteString(f, "inbox.Config")
	case plus:
		field = "%+v"
	}
	_, _ = io.WriteString(f, "{")
	v := reflect.ValueOf(c)
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		if i > 0 {
			_, _ = io.WriteString(f, sep)
		}
		sf, fv := t.Field(i), v.Field(i)
		if plus || sharp {
			_, _ = io.WriteString(f, sf.Name+":")
		}
		switch {
		case sf.Name == "Dialer":
			d := redactedDialer{c.Dialer}
			if sharp {
				_, _ = io.WriteString(f, d.GoString())
			} else {
				_, _ = io.WriteString(f, d.String())
			}
		case fv.Kind() == reflect.Pointer:
			// As fmt prints a pointer inside a struct: its address, not
			// what it points to (which may hold a secret).
			switch {
			case sharp && fv.IsNil():
				_, _ = fmt.Fprintf(f, "(%s)(nil)", sf.Type)
			case sharp:
				_, _ = fmt.Fprintf(f, "(%s)(%#x)", sf.Type, fv.Pointer())
			case fv.IsNil():
				_, _ = io.WriteString(f, "<nil>")
			default:
				_, _ = fmt.Fprintf(f, "%#x", fv.Pointer())
			}
		default:
			_, _ = fmt.Fprintf(f, field, fv.Interface())
		}
	}
	_, _ = io.WriteString(f, "}")
}

// String implements fmt.Stringer: c as %+v prints it, the Dialer redacted.
func (c Config) String() string { return fmt.Sprintf("%+v", c) }

// GoString implements fmt.GoStringer: c as %#v prints it, the Dialer
// redacted.
func (c Config) GoString() string { return fmt.Sprintf("%#v", c) }

// LogValue implements slog.LogValuer: the settings of c, the Dialer
// redacted, functions and the logger only said to be set or not.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Any("brokers", c.Brokers),
		slog.String("group_id", c.GroupID),
		slog.Any("topics", c.Topics),
		slog.String("table", c.Table),
		slog.Int("workers", c.Workers),
		slog.Int("batch_size", c.BatchSize),
		slog.Int("max_attempts", c.MaxAttempts),
		slog.Duration("min_backoff", c.MinBackoff),
		slog.Duration("max_backoff", c.MaxBackoff),
		slog.Int64("start_offset", c.StartOffset),
		slog.Duration("max_wait", c.MaxWait),
		slog.Duration("session_timeout", c.SessionTimeout),
		slog.Any("dialer", redactedDialer{c.Dialer}),
		slog.Bool("reader", c.Reader != nil),
		slog.Bool("event_id", c.EventID != nil),
		slog.Int("sequence_keys", c.SequenceKeys),
		slog.Bool("ignore_sequence", c.IgnoreSequence),
		slog.Bool("after_commit", c.AfterCommit != nil),
	)
}

// redactedDialer shows what a Dialer connects with, never its SASL
// mechanism's fields.
type redactedDialer struct{ d *kafkago.Dialer }

func (r redactedDialer) sasl() string {
	if r.d.SASLMechanism == nil {
		return ""
	}
	return r.d.SASLMechanism.Name()
}

func (r redactedDialer) String() string {
	if r.d == nil {
		return "<nil>"
	}
	return fmt.Sprintf("&{ClientID:%s Timeout:%v TLS:%t SASL:%s}", r.d.ClientID, r.d.Timeout, r.d.TLS != nil, r.sasl())
}

func (r redactedDialer) GoString() string {
	if r.d == nil {
		return "(*kafka.Dialer)(nil)"
	}
	return fmt.Sprintf("&kafka.Dialer{ClientID:%q, Timeout:%d, TLS:%t, SASL:%q /* other fields not shown */}",
		r.d.ClientID, r.d.Timeout, r.d.TLS != nil, r.sasl())
}

func (r redactedDialer) LogValue() slog.Value {
	if r.d == nil {
		return slog.StringValue("")
	}
	return slog.GroupValue(
		slog.String("client_id", r.d.ClientID),
		slog.Duration("timeout", r.d.Timeout),
		slog.Bool("tls", r.d.TLS != nil),
		slog.String("sasl", r.sasl()),
	)
}
