// Command kfakebroker runs an in-memory, single-broker Kafka-compatible
// cluster (github.com/twmb/franz-go/pkg/kfake) for local demos and tests.
//
// It is started in the background by scripts/servers.sh ("up broker"), but can
// be run by hand:
//
//	go run ./cmd/kfakebroker -addr 127.0.0.1:59092 -topics orders,payments
//
// Topics are auto-created on first use. Data lives in memory only and is lost
// when the process exits. The process stops cleanly on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	if err := run(); err != nil {
		slog.Error("kfakebroker failed", "err", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		addr       = flag.String("addr", "127.0.0.1:59092", "host:port the single broker listens on (and advertises)")
		partitions = flag.Int("partitions", 8, "number of partitions for auto-created and pre-created topics")
		topics     = flag.String("topics", "", "comma-separated list of topics to create at start")
		pidFile    = flag.String("pidfile", "", "if set, write the process id to this file (removed on exit)")
		logLevel   = flag.String("log-level", "info", "log level for this command: debug, info, warn or error")
		kfakeLevel = flag.String("kfake-log-level", "warn", "log level for the kfake cluster itself: none, debug, info, warn or error (info logs every request)")
	)
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", flag.Args())
	}

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	slog.SetDefault(logger)

	kLevel, err := parseKfakeLevel(*kfakeLevel)
	if err != nil {
		return err
	}

	host, portStr, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("-addr %q: %w", *addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return fmt.Errorf("-addr %q: invalid port", *addr)
	}
	if *partitions < 1 {
		return fmt.Errorf("-partitions must be >= 1, got %d", *partitions)
	}

	opts := []kfake.Opt{
		kfake.Ports(port), // exactly one broker
		kfake.DefaultNumPartitions(*partitions),
		kfake.AllowAutoTopicCreation(),
		kfake.ClusterID("go-outbox-kfake"),
		kfake.WithLogger(slogLogger{logger.With("component", "kfake"), kLevel}),
	}
	if host != "" && host != "127.0.0.1" {
		// kfake always listens on 127.0.0.1; honour the requested host.
		opts = append(opts, kfake.ListenFn(func(network, address string) (net.Listener, error) {
			_, p, err := net.SplitHostPort(address)
			if err != nil {
				return nil, err
			}
			return net.Listen(network, net.JoinHostPort(host, p))
		}))
	}
	var seed []string
	for _, t := range strings.Split(*topics, ",") {
		if t = strings.TrimSpace(t); t != "" {
			seed = append(seed, t)
		}
	}
	if len(seed) > 0 {
		opts = append(opts, kfake.SeedTopics(int32(*partitions), seed...))
	}

	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("start kfake cluster on %s: %w", *addr, err)
	}
	defer cluster.Close()

	if *pidFile != "" {
		if err := os.WriteFile(*pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return fmt.Errorf("write pid file: %w", err)
		}
		defer func() {
			// Only remove the pid file if it still names us.
			if b, err := os.ReadFile(*pidFile); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
				_ = os.Remove(*pidFile)
			}
		}()
	}

	slog.Info("kfake broker listening",
		"addrs", strings.Join(cluster.ListenAddrs(), ","),
		"partitions", *partitions,
		"topics", seed,
		"auto_create_topics", true,
		"pid", os.Getpid(),
	)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	slog.Info("signal received, shutting down", "cause", context.Cause(ctx))
	return nil
}

func parseKfakeLevel(s string) (kfake.LogLevel, error) {
	switch strings.ToLower(s) {
	case "none", "off":
		return kfake.LogLevelNone, nil
	case "error":
		return kfake.LogLevelError, nil
	case "warn", "warning":
		return kfake.LogLevelWarn, nil
	case "info":
		return kfake.LogLevelInfo, nil
	case "debug":
		return kfake.LogLevelDebug, nil
	}
	return 0, errors.New("-kfake-log-level: want none, error, warn, info or debug, got " + strconv.Quote(s))
}

// slogLogger adapts kfake.Logger to log/slog.
type slogLogger struct {
	l     *slog.Logger
	level kfake.LogLevel
}

func (s slogLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	if level > s.level || level == kfake.LogLevelNone {
		return
	}
	msg := fmt.Sprintf(format, args...)
	switch level {
	case kfake.LogLevelError:
		s.l.Error(msg)
	case kfake.LogLevelWarn:
		s.l.Warn(msg)
	case kfake.LogLevelInfo:
		s.l.Info(msg)
	default:
		s.l.Debug(msg)
	}
}
