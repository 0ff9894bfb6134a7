package kafkapub

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/kafka"
)

var mechanisms = []string{kafka.SASLPlain, kafka.SASLScramSHA256, kafka.SASLScramSHA512}

// cluster starts a kfake cluster of its own with opts; the tests that use
// it need broker-side options that real brokers in OUTBOX_TEST_KAFKA_BROKERS
// do not have, so they skip then.
func cluster(t *testing.T, opts ...kfake.Opt) []string {
	t.Helper()
	if os.Getenv(kafkaenv.KafkaEnv) != "" {
		t.Skip("needs an in-process kfake cluster with SASL, ACLs or TLS")
	}
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// kgoSASL is the franz-go mechanism for s, to read back.
func kgoSASL(s kafka.SASL) sasl.Mechanism {
	switch s.Mechanism {
	case kafka.SASLPlain:
		return plain.Auth{User: s.Username, Pass: s.Password}.AsMechanism()
	case kafka.SASLScramSHA256:
		return scram.Auth{User: s.Username, Pass: s.Password}.AsSha256Mechanism()
	default:
		return scram.Auth{User: s.Username, Pass: s.Password}.AsSha512Mechanism()
	}
}

// readBack reads n records of topic with franz-go (kafkaenv.ReadTopic has no
// SASL or TLS options) and returns their values in offset order.
func readBack(t *testing.T, brokers []string, topic string, n int, opts ...kgo.Opt) []string {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100 * time.Millisecond),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []string
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: got %v, want %d records", topic, out, n)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Logf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) { out = append(out, string(r.Value)) })
	}
	return out
}

// endOffset is the end offset of partition 0 of topic, asked through the
// transport of a Publisher of cfg (for its credentials).
func endOffset(t *testing.T, brokers []string, topic string, cfg kafka.Config) int64 {
	t.Helper()
	cfg.Brokers = brokers
	tr := newPub(t, cfg).Writer().Transport
	c := &kafkago.Client{Addr: kafkago.TCP(brokers...), Transport: tr, Timeout: 5 * time.Second}
	res, err := c.ListOffsets(context.Background(), &kafkago.ListOffsetsRequest{
		Topics: map[string][]kafkago.OffsetRequest{topic: {kafkago.LastOffsetOf(0)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	po := res.Topics[topic]
	if len(po) != 1 || po[0].Error != nil {
		t.Fatalf("list offsets of %s: %+v", topic, po)
	}
	return po[0].LastOffset
}

// allFailed checks that err fails each of n messages and returns the
// errors.
func allFailed(t *testing.T, err error, n int) gormoutbox.PublishErrors {
	t.Helper()
	var pe gormoutbox.PublishErrors
	if !errors.As(err, &pe) || len(pe) != n {
		t.Fatalf("Publish: %v, want PublishErrors of %d", err, n)
	}
	for i, e := range pe {
		if e == nil {
			t.Fatalf("message %d counted as published: %v", i, pe)
		}
	}
	return pe
}

func TestPublishSASL(t *testing.T) {
	for _, mech := range mechanisms {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			topic := "sasl"
			creds := kafka.SASL{Mechanism: mech, Username: "outbox", Password: "pw-" + mech}
			brokers := cluster(t, kfake.EnableSASL(), kfake.Superuser(mech, creds.Username, creds.Password),
				kfake.SeedTopics(1, topic))
			p := newPub(t, kafka.Config{Brokers: brokers, SASL: creds, ClientID: "outbox-test"})
			if err := p.Publish(context.Background(), []gormoutbox.Message{
				msg(topic, "k", "v1"), msg(topic, "j", "v2"), msg(topic, "k", "v3"),
			}); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			got := readBack(t, brokers, topic, 3, kgo.SASL(kgoSASL(creds)))
			if strings.Join(got, ",") != "v1,v2,v3" {
				t.Fatalf("topic holds %v, want v1 v2 v3", got)
			}
		})
	}
}

// A wrong password: every message fails, with an error that names the
// mechanism and the user but not the password, and nothing is written.
func TestPublishSASLWrongPassword(t *testing.T) {
	for _, mech := range mechanisms {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			topic := "sasl"
			good := kafka.SASL{Mechanism: mech, Username: "outbox", Password: "right-password"}
			brokers := cluster(t, kfake.EnableSASL(), kfake.Superuser(mech, good.Username, good.Password),
				kfake.SeedTopics(1, topic))
			bad := good
			bad.Password = "wrong-Pa55word"
			p := newPub(t, kafka.Config{Brokers: brokers, SASL: bad, MaxAttempts: 1})
			start := time.Now()
			err := p.Publish(context.Background(), []gormoutbox.Message{
				msg(topic, "k", "v1"), msg(topic, "j", "v2"), msg(topic, "k", "v3"),
			})
			t.Logf("after %v: %v", time.Since(start), err)
			for i, e := range allFailed(t, err, 3) {
				s := e.Error()
				if !strings.Contains(s, mech) || !strings.Contains(s, `"outbox"`) || !strings.Contains(s, "SASL") {
					t.Errorf("message %d: %q does not name SASL, %s and user \"outbox\"", i, s, mech)
				}
				if strings.Contains(s, bad.Password) {
					t.Errorf("message %d: %q contains the password", i, s)
				}
				if !errors.Is(e, kafkago.SASLAuthenticationFailed) {
					t.Errorf("message %d: %v is not SASLAuthenticationFailed", i, e)
				}
			}
			if strings.Contains(fmt.Sprint(err), bad.Password) {
				t.Errorf("%q contains the password", err)
			}
			if n := endOffset(t, brokers, topic, kafka.Config{SASL: good}); n != 0 {
				t.Fatalf("topic end offset %d, want 0", n)
			}
		})
	}
}

// ACLs on. A user that may describe the topic but not write to it: every
// message fails with TopicAuthorizationFailed naming the topic and user. A
// user without any ACL: kafka-go does not see the topic at all.
func TestPublishTopicAuthorizationFailed(t *testing.T) {
	topic := "orders"
	reader := kafka.SASL{Mechanism: kafka.SASLScramSHA256, Username: "reader", Password: "reader-pw"}
	nobody := kafka.SASL{Mechanism: kafka.SASLPlain, Username: "nobody", Password: "nobody-pw"}
	lit := kmsg.ACLResourcePatternTypeLiteral
	brokers := cluster(t, kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser(kafka.SASLScramSHA256, "admin", "admin-pw"),
		kfake.User(reader.Mechanism, reader.Username, reader.Password,
			kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: topic, Pattern: lit, Operation: kmsg.ACLOperationDescribe, Allow: true},
			kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: topic, Pattern: lit, Operation: kmsg.ACLOperationRead, Allow: true}),
		kfake.User(nobody.Mechanism, nobody.Username, nobody.Password),
		kfake.SeedTopics(2, topic))
	msgs := []gormoutbox.Message{msg(topic, "k", "v1"), msg(topic, "j", "v2"), msg(topic, "k", "v3")}

	t.Run("no WRITE", func(t *testing.T) {
		p := newPub(t, kafka.Config{Brokers: brokers, SASL: reader, MaxAttempts: 1})
		err := p.Publish(context.Background(), msgs)
		t.Logf("%v", err)
		for i, e := range allFailed(t, err, 3) {
			if !errors.Is(e, kafkago.TopicAuthorizationFailed) || !strings.Contains(e.Error(), "topic "+topic) ||
				!strings.Contains(e.Error(), `"reader"`) {
				t.Errorf("message %d: %v, want TopicAuthorizationFailed naming topic %s and user \"reader\"", i, e, topic)
			}
		}
	})
	t.Run("no DESCRIBE", func(t *testing.T) {
		p := newPub(t, kafka.Config{Brokers: brokers, SASL: nobody, MaxAttempts: 1})
		err := p.Publish(context.Background(), msgs)
		t.Logf("%v", err)
		for i, e := range allFailed(t, err, 3) {
			if !errors.Is(e, kafkago.UnknownTopicOrPartition) || !strings.Contains(e.Error(), `"nobody" is not authorized`) {
				t.Errorf("message %d: %v, want UnknownTopicOrPartition saying \"nobody\" may not be authorized", i, e)
			}
		}
	})
	if n := endOffset(t, brokers, topic, kafka.Config{
		SASL: kafka.SASL{Mechanism: kafka.SASLScramSHA256, Username: "admin", Password: "admin-pw"}}); n != 0 {
		t.Fatalf("topic end offset %d, want 0", n)
	}
}

// selfSigned returns a server certificate for 127.0.0.1 and localhost and
// a pool trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kfake"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestPublishTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	topic := "tls"
	brokers := cluster(t, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}),
		kfake.SeedTopics(1, topic))

	t.Run("trusted", func(t *testing.T) {
		p := newPub(t, kafka.Config{Brokers: brokers, TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}})
		if err := p.Publish(context.Background(), []gormoutbox.Message{msg(topic, "k", "v1"), msg(topic, "k", "v2")}); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		got := readBack(t, brokers, topic, 2, kgo.DialTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
		if strings.Join(got, ",") != "v1,v2" {
			t.Fatalf("topic holds %v, want v1 v2", got)
		}
	})
	t.Run("untrusted", func(t *testing.T) {
		// An empty pool trusts nothing (the system pool would not trust
		// the test's certificate either, but may be slow to load).
		p := newPub(t, kafka.Config{Brokers: brokers, MaxAttempts: 1,
			TLS: &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}})
		err := p.Publish(context.Background(), []gormoutbox.Message{msg(topic, "k", "x1"), msg(topic, "j", "x2")})
		t.Logf("%v", err)
		for i, e := range allFailed(t, err, 2) {
			var cve *tls.CertificateVerificationError
			if !errors.As(e, &cve) || !strings.Contains(e.Error(), "TLS handshake") {
				t.Errorf("message %d: %v, want a TLS certificate verification error", i, e)
			}
		}
	})
}

func TestNewPublisherSecurityConfigErrors(t *testing.T) {
	const pw = "hunter2-secret"
	b := []string{"127.0.0.1:1"}
	for _, tc := range []struct {
		name  string
		cfg   kafka.Config
		field string
	}{
		{"unknown mechanism", kafka.Config{Brokers: b, SASL: kafka.SASL{Mechanism: "GSSAPI", Username: "u", Password: pw}}, "SASL.Mechanism"},
		{"lower-case mechanism", kafka.Config{Brokers: b, SASL: kafka.SASL{Mechanism: "plain", Username: "u", Password: pw}}, "SASL.Mechanism"},
		{"no mechanism", kafka.Config{Brokers: b, SASL: kafka.SASL{Username: "u", Password: pw}}, "SASL.Mechanism"},
		{"no password", kafka.Config{Brokers: b, SASL: kafka.SASL{Mechanism: kafka.SASLPlain, Username: "u"}}, "SASL.Password"},
		{"no user", kafka.Config{Brokers: b, SASL: kafka.SASL{Mechanism: kafka.SASLScramSHA512, Password: pw}}, "SASL.Username"},
		{"Transport and TLS", kafka.Config{Brokers: b, Transport: &kafkago.Transport{}, TLS: &tls.Config{}}, "Transport"},
		{"Transport and SASL", kafka.Config{Brokers: b, Transport: &kafkago.Transport{},
			SASL: kafka.SASL{Mechanism: kafka.SASLPlain, Username: "u", Password: pw}}, "Transport"},
		{"Transport and ClientID", kafka.Config{Brokers: b, Transport: &kafkago.Transport{}, ClientID: "c"}, "ClientID"},
	} {
		_, err := kafka.NewPublisher(tc.cfg)
		if !errors.Is(err, kafka.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: %v, want ErrInvalidConfig naming %s", tc.name, err, tc.field)
		}
		if err != nil && strings.Contains(err.Error(), pw) {
			t.Errorf("%s: %q contains the password", tc.name, err)
		}
	}
	// A Transport of the caller's alone is fine, and so are TLS and SASL alone.
	for _, cfg := range []kafka.Config{
		{Brokers: b, Transport: &kafkago.Transport{}},
		{Brokers: b, TLS: &tls.Config{}, ClientID: "c", SASL: kafka.SASL{Mechanism: kafka.SASLScramSHA256, Username: "u", Password: pw}},
	} {
		p, err := kafka.NewPublisher(cfg)
		if err != nil {
			t.Errorf("NewPublisher(%+v): %v", cfg, err)
			continue
		}
		_ = p.Close()
	}
}

// The password shows in no printed or logged form of a Config.
func TestConfigDoesNotPrintThePassword(t *testing.T) {
	const pw = "hunter2-secret"
	cfg := kafka.Config{Brokers: []string{"b:9092"}, TLS: &tls.Config{ServerName: "b"},
		SASL: kafka.SASL{Mechanism: kafka.SASLScramSHA512, Username: "outbox-user", Password: pw}}
	var buf bytes.Buffer
	text := slog.New(slog.NewTextHandler(&buf, nil))
	jsonl := slog.New(slog.NewJSONHandler(&buf, nil))
	outs := map[string]func() string{
		"%v":       func() string { return fmt.Sprintf("%v", cfg) },
		"%+v":      func() string { return fmt.Sprintf("%+v", cfg) },
		"%#v":      func() string { return fmt.Sprintf("%#v", cfg) },
		"&%+v":     func() string { return fmt.Sprintf("%+v", &cfg) },
		"SASL %v":  func() string { return fmt.Sprintf("%v", cfg.SASL) },
		"SASL %#v": func() string { return fmt.Sprintf("%#v", cfg.SASL) },
		"SASL json": func() string {
			b, err := json.Marshal(cfg.SASL)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		},
	}
	for name, l := range map[string]*slog.Logger{"text": text, "json": jsonl} {
		outs["slog "+name+" cfg"] = func() string { buf.Reset(); l.Info("m", "cfg", cfg); return buf.String() }
		outs["slog "+name+" &cfg"] = func() string { buf.Reset(); l.Info("m", "cfg", &cfg); return buf.String() }
		outs["slog "+name+" sasl"] = func() string { buf.Reset(); l.Info("m", "sasl", cfg.SASL); return buf.String() }
	}
	for name, f := range outs {
		s := f()
		if strings.Contains(s, pw) {
			t.Errorf("%s: %s shows the password", name, s)
		}
		if !strings.Contains(s, "outbox-user") || !strings.Contains(s, kafka.SASLScramSHA512) {
			t.Errorf("%s: %s does not show the mechanism and user", name, s)
		}
	}
}

// Config.Dialer reaches a SASL cluster with the publisher's credentials: a
// kafka-go reader (as the inbox uses) reads back what was published.
func TestDialerSASL(t *testing.T) {
	mech := kafka.SASLScramSHA256
	topic := "dialer"
	creds := kafka.SASL{Mechanism: mech, Username: "outbox", Password: "pw-dialer"}
	brokers := cluster(t, kfake.EnableSASL(), kfake.Superuser(mech, creds.Username, creds.Password),
		kfake.SeedTopics(1, topic))
	cfg := kafka.Config{Brokers: brokers, SASL: creds, ClientID: "outbox-test"}
	if err := newPub(t, cfg).Publish(context.Background(), []gormoutbox.Message{msg(topic, "k", "v1"), msg(topic, "k", "v2")}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	d, err := cfg.Dialer()
	if err != nil {
		t.Fatal(err)
	}
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, Dialer: d, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, want := range []string{"v1", "v2"} {
		m, err := r.ReadMessage(ctx)
		if err != nil || string(m.Value) != want {
			t.Fatalf("read %q, %v; want %q", m.Value, err, want)
		}
	}
	bad := kafka.Config{SASL: kafka.SASL{Mechanism: mech, Username: "outbox"}}
	if _, err := bad.Dialer(); !errors.Is(err, kafka.ErrInvalidConfig) {
		t.Errorf("Dialer without a password: %v, want ErrInvalidConfig", err)
	}
}
