package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// SASL mechanisms for SASL.Mechanism.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// SASL configures SASL authentication. The zero value means none.
//
// Its String, GoString, LogValue and MarshalJSON methods print the
// mechanism and the user but never the password, so a Config can be
// printed (fmt's %v, %+v, %#v) and logged (log/slog) as it is.
type SASL struct {
	// Mechanism is SASLPlain ("PLAIN"), SASLScramSHA256 ("SCRAM-SHA-256")
	// or SASLScramSHA512 ("SCRAM-SHA-512"). Empty means no SASL; the
	// other fields must then be empty too. PLAIN sends the password in
	// clear text: use it with TLS only.
	Mechanism string

	// Username and Password are the credentials; both are required when
	// Mechanism is set.
	Username string
	Password string
}

// enabled reports whether any field is set.
func (s SASL) enabled() bool { return s != SASL{} }

// String implements fmt.Stringer, without the password.
func (s SASL) String() string {
	if !s.enabled() {
		return "{}"
	}
	return fmt.Sprintf("{Mechanism:%s Username:%s Password:%s}", s.Mechanism, s.Username, s.redacted())
}

// GoString implements fmt.GoStringer, without the password.
func (s SASL) GoString() string {
	return fmt.Sprintf("kafka.SASL{Mechanism:%q, Username:%q, Password:%q}", s.Mechanism, s.Username, s.redacted())
}

// LogValue implements slog.LogValuer, without the password.
func (s SASL) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("mechanism", s.Mechanism),
		slog.String("username", s.Username),
		slog.String("password", s.redacted()),
	)
}

// MarshalJSON implements json.Marshaler, without the password.
func (s SASL) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct{ Mechanism, Username, Password string }{s.Mechanism, s.Username, s.redacted()})
}

func (s SASL) redacted() string {
	if s.Password == "" {
		return ""
	}
	return "REDACTED"
}

// describe names the mechanism and user for error messages.
func (s SASL) describe() string {
	return fmt.Sprintf("SASL %s authentication as user %q", s.Mechanism, s.Username)
}

// mechanism checks s and builds the kafka-go mechanism, wrapped so that
// it prints without the password (see redactedMechanism); nil when s is
// the zero value.
func (s SASL) mechanism() (sasl.Mechanism, error) {
	m, err := s.kafkaMechanism()
	if m == nil || err != nil {
		return nil, err
	}
	return redactedMechanism{m, s}, nil
}

// redactedMechanism is a kafka-go SASL mechanism that prints, logs and
// encodes as its SASL settings, without the password. kafka-go's own
// mechanisms do not: fmt's %v of a Dialer holding plain.Mechanism prints
// the password ({user s3cret}), so the Dialer that Config.Dialer returns
// (and the Publisher's Transport) hold this instead.
type redactedMechanism struct {
	sasl.Mechanism
	cfg SASL
}

// Format implements fmt.Formatter, for every verb: SASL's String, or its
// GoString for %#v.
func (m redactedMechanism) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, m.cfg.GoString())
		return
	}
	_, _ = io.WriteString(f, m.cfg.String())
}

// String implements fmt.Stringer, without the password.
func (m redactedMechanism) String() string { return m.cfg.String() }

// LogValue implements slog.LogValuer, without the password.
func (m redactedMechanism) LogValue() slog.Value { return m.cfg.LogValue() }

// MarshalJSON implements json.Marshaler, without the password.
func (m redactedMechanism) MarshalJSON() ([]byte, error) { return m.cfg.MarshalJSON() }

// kafkaMechanism checks s and builds kafka-go's mechanism; nil when s is
// the zero value.
func (s SASL) kafkaMechanism() (sasl.Mechanism, error) {
	if !s.enabled() {
		return nil, nil
	}
	if s.Username == "" {
		return nil, fmt.Errorf("%w: SASL.Username is empty", ErrInvalidConfig)
	}
	if s.Password == "" {
		return nil, fmt.Errorf("%w: SASL.Password is empty (SASL.Username %q)", ErrInvalidConfig, s.Username)
	}
	var algo scram.Algorithm
	switch s.Mechanism {
	case SASLPlain:
		return plain.Mechanism{Username: s.Username, Password: s.Password}, nil
	case SASLScramSHA256:
		algo = scram.SHA256
	case SASLScramSHA512:
		algo = scram.SHA512
	case "":
		return nil, fmt.Errorf("%w: SASL.Mechanism is empty but SASL.Username is set; want %s, %s or %s",
			ErrInvalidConfig, SASLPlain, SASLScramSHA256, SASLScramSHA512)
	default:
		return nil, fmt.Errorf("%w: SASL.Mechanism %s is not supported; want %s, %s or %s",
			ErrInvalidConfig, strconv.Quote(s.Mechanism), SASLPlain, SASLScramSHA256, SASLScramSHA512)
	}
	m, err := scram.Mechanism(algo, s.Username, s.Password)
	if err != nil {
		// The scram package's errors (from SASLprep of the user name or
		// password) do not quote the password; name the field only.
		return nil, fmt.Errorf("%w: SASL.Username or SASL.Password cannot be used with %s (not valid SASLprep)",
			ErrInvalidConfig, s.Mechanism)
	}
	return m, nil
}

// transport builds the Publisher's own Transport from cfg, and the
// tracker of its SASL mechanism (nil without SASL).
func transport(cfg *Config) (*kafkago.Transport, *authTracker, error) {
	mech, err := cfg.SASL.mechanism()
	if err != nil {
		return nil, nil, err
	}
	if cfg.Transport != nil {
		var set []string
		if cfg.TLS != nil {
			set = append(set, "TLS")
		}
		if cfg.SASL.enabled() {
			set = append(set, "SASL")
		}
		if cfg.ClientID != "" {
			set = append(set, "ClientID")
		}
		if len(set) > 0 {
			return nil, nil, fmt.Errorf("%w: Transport is set together with %s; set these on the Transport instead",
				ErrInvalidConfig, strings.Join(set, ", "))
		}
		return nil, nil, nil
	}
	tr := &kafkago.Transport{TLS: cfg.TLS, ClientID: cfg.ClientID}
	var at *authTracker
	if mech != nil {
		at = &authTracker{Mechanism: mech}
		tr.SASL = at
	}
	return tr, at, nil
}

// explain says what err most likely means, naming the SASL mechanism and
// user (never the password), or TLS, when they are the cause. The result
// still matches err (errors.Is, errors.As).
func (p *Publisher) explain(topic string, err error) error {
	s := p.cfg.SASL
	who := "this client"
	if s.enabled() {
		who = "user " + strconv.Quote(s.Username)
	}
	switch {
	case errors.Is(err, kafkago.TopicAuthorizationFailed):
		return fmt.Errorf("kafka: topic %s: %s is not authorized to write to it: %w", topic, who, err)
	case errors.Is(err, kafkago.UnknownTopicOrPartition) && s.enabled():
		// kafka-go serves metadata from its cache of all the topics the
		// user may describe: a topic it may not describe looks missing.
		return fmt.Errorf("kafka: topic %s: no such topic, or %s is not authorized to describe it: %w", topic, who, err)
	case errors.Is(err, kafkago.SASLAuthenticationFailed),
		errors.Is(err, kafkago.IllegalSASLState),
		errors.Is(err, kafkago.UnsupportedSASLMechanism):
		if s.enabled() {
			return fmt.Errorf("kafka: topic %s: %s failed (wrong user name or password, or a mechanism the broker does not allow): %w",
				topic, s.describe(), err)
		}
	case p.auth != nil && p.auth.failing() && closedConn(err):
		// A broker refusing the credentials closes the connection; kafka-go
		// then reports the end of the stream, not an authentication
		// error. The last authentication began and never completed: say
		// so, and match SASLAuthenticationFailed too.
		return fmt.Errorf("kafka: topic %s: %s failed (wrong user name or password?), or the connection was closed during it: %w: %w",
			topic, s.describe(), kafkago.SASLAuthenticationFailed, err)
	case p.cfg.TLS != nil && tlsFailure(err):
		return fmt.Errorf("kafka: topic %s: TLS handshake with the broker failed: %w", topic, err)
	}
	return fmt.Errorf("kafka: topic %s: %w", topic, err)
}

// authTracker wraps a SASL mechanism to know whether the last
// authentication began and did not complete: kafka-go does not tell a
// connection closed by a broker refusing the credentials from any other.
type authTracker struct {
	sasl.Mechanism
	state atomic.Int32 // authNone, authPending or authDone
}

const (
	authNone int32 = iota
	authPending
	authDone
)

func (t *authTracker) Start(ctx context.Context) (sasl.StateMachine, []byte, error) {
	t.state.Store(authPending)
	sm, ir, err := t.Mechanism.Start(ctx)
	if err != nil {
		return nil, nil, err
	}
	return trackedSession{sm, t}, ir, nil
}

// failing reports whether the last authentication began and has not
// completed (it failed, or is under way).
func (t *authTracker) failing() bool { return t.state.Load() == authPending }

type trackedSession struct {
	sm sasl.StateMachine
	t  *authTracker
}

func (s trackedSession) Next(ctx context.Context, challenge []byte) (bool, []byte, error) {
	done, resp, err := s.sm.Next(ctx, challenge)
	if done && err == nil {
		s.t.state.Store(authDone)
	}
	return done, resp, err
}

// closedConn reports whether err is the peer closing or resetting the
// connection.
func closedConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, net.ErrClosed)
}

// tlsFailure reports whether err comes from a TLS handshake.
func tlsFailure(err error) bool {
	var (
		cve *tls.CertificateVerificationError
		rhe tls.RecordHeaderError
		ua  x509.UnknownAuthorityError
		hn  x509.HostnameError
		ci  x509.CertificateInvalidError
		ae  tls.AlertError
	)
	return errors.As(err, &cve) || errors.As(err, &rhe) || errors.As(err, &ua) ||
		errors.As(err, &hn) || errors.As(err, &ci) || errors.As(err, &ae)
}

// LogValue implements slog.LogValuer: the settings of c, with the SASL
// password redacted (TLS and Transport are only said to be set or not).
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Any("brokers", c.Brokers),
		slog.String("client_id", c.ClientID),
		slog.Bool("tls", c.TLS != nil),
		slog.Any("sasl", c.SASL),
		slog.Bool("transport", c.Transport != nil),
		slog.Int("batch_size", c.BatchSize),
		slog.Int64("batch_bytes", c.BatchBytes),
		slog.Int("max_attempts", c.MaxAttempts),
		slog.Duration("batch_timeout", c.BatchTimeout),
		slog.Duration("write_timeout", c.WriteTimeout),
		slog.Int("required_acks", int(c.RequiredAcks)),
		slog.String("compression", compression(c.Compression)),
		slog.Bool("allow_auto_topic_creation", c.AllowAutoTopicCreation),
	)
}

func compression(c kafkago.Compression) string {
	if c == 0 {
		return "none"
	}
	return c.String()
}

// Dialer returns a kafka-go Dialer with c's TLS, SASL and ClientID, for
// kafka-go readers (inbox.Config.Dialer) that must reach the same cluster
// as the Publisher. A bad SASL setting is an ErrInvalidConfig. Fields of
// c that only concern producing are ignored.
// The Dialer's SASLMechanism prints and logs (fmt, slog, encoding/json)
// as c.SASL does, without the password.
func (c Config) Dialer() (*kafkago.Dialer, error) {
	mech, err := c.SASL.mechanism()
	if err != nil {
		return nil, err
	}
	d := &kafkago.Dialer{Timeout: 10 * time.Second, DualStack: true, ClientID: c.ClientID, TLS: c.TLS, SASLMechanism: mech}
	return d, nil
}
