package inventory

import (
	"context"
	"io"
	"os"
	"testing"
	"time"
)

// ShortOptions are the options of the examples' tests: a short burst,
// with the brokers of OUTBOX_TEST_KAFKA_BROKERS when set (else kfake).
func ShortOptions(t testing.TB) Options {
	return Options{
		Brokers: os.Getenv("OUTBOX_TEST_KAFKA_BROKERS"),
		Items:   30, Changes: 400, Writers: 4, Timeout: 90 * time.Second,
		Out: testWriter{t},
	}
}

// RunShort runs a main's run function with ShortOptions and checks its
// Result.
func RunShort(t testing.TB, run func(context.Context, Options) (Result, error)) {
	t.Helper()
	res, err := run(context.Background(), ShortOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	CheckResult(t, res)
}

// CheckResult fails t unless res shows the two services converged with
// every acknowledgement applied and the FAILED path taken.
func CheckResult(t testing.TB, res Result) {
	t.Helper()
	switch {
	case !res.Equal || res.ProductRows == 0 || res.ProductRows != res.CopyRows:
		t.Errorf("tables differ: %+v", res)
	case res.Processed != res.Events || res.Failed != 0:
		t.Errorf("%d of %d events processed, %d failed: %+v", res.Processed, res.Events, res.Failed, res)
	case res.Acks != res.Events+res.Resent:
		t.Errorf("%d answers sent for %d events and %d re-sends: %+v", res.Acks, res.Events, res.Resent, res)
	case res.Resent == 0:
		t.Errorf("no event was re-sent: the FAILED path did not run: %+v", res)
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}

var _ io.Writer = testWriter{}
