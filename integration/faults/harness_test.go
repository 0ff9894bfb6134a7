package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/inbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// Account is the business table: each update of an account adds one to
// its version and is captured as an event keyed by the account's name, so
// the committed events of a key are its versions 1..Version.
type Account struct {
	gormoutbox.Source `outbox:"topic:fault-accounts;events:update"`
	ID                uint   `gorm:"primaryKey"`
	Name              string `gorm:"size:32;uniqueIndex" outbox:"key"`
	Version           int64
}

// topic is Account's topic (each subtest has a broker of its own).
const topic = "fault-accounts"

// Effect is the inbox handler's effect: one row per call, no unique
// constraint, so an event handled twice shows as two rows.
type Effect struct {
	ID      uint   `gorm:"primaryKey"`
	EventID string `gorm:"size:64;index"`
	Name    string `gorm:"size:32"`
	Version int64
}

// broker is an in-process kfake broker that keeps its data in a directory
// of the test, so that it can be stopped and started again on its address.
type broker struct {
	t       *testing.T
	dir     string
	port    int
	cluster *kfake.Cluster
}

func newBroker(t *testing.T, partitions int) *broker {
	t.Helper()
	b := &broker{t: t, dir: t.TempDir()}
	b.start(partitions)
	_, port, _ := strings.Cut(b.cluster.ListenAddrs()[0], "127.0.0.1:")
	b.port, _ = strconv.Atoi(port)
	t.Cleanup(func() {
		if b.cluster != nil {
			b.cluster.Close()
		}
	})
	return b
}

func (b *broker) start(partitions int) {
	b.t.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.DataDir(b.dir), kfake.SeedTopics(int32(partitions), topic)}
	if b.port != 0 {
		opts = append(opts, kfake.Ports(b.port))
	}
	var err error
	// The port of the previous run may take a moment to be free again.
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b.cluster, err = kfake.NewCluster(opts...)
		if err == nil || time.Now().After(end) {
			break
		}
	}
	if err != nil {
		b.t.Fatalf("start kfake: %v", err)
	}
}

func (b *broker) addrs() []string { return []string{fmt.Sprintf("127.0.0.1:%d", b.port)} }

func (b *broker) stop() {
	b.cluster.Close()
	b.cluster = nil
}

// proxy forwards TCP connections to a server; cut closes every one.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[s] = struct{}{}, struct{}{}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(c, s)
		go pipe(s, c)
	}
}

// cut closes every connection through the proxy and returns how many
// client connections it closed.
func (p *proxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.conns) / 2
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
	return n
}

// child is a relay or consumer process.
type child struct {
	t    *testing.T
	role string
	spec childSpec
	log  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	// skipped sums the inbox duplicates the consumer's runs skipped.
	skipped int64
}

func startChild(t *testing.T, role string, n int, spec childSpec) *child {
	t.Helper()
	c := &child{t: t, role: role, spec: spec, log: filepath.Join(t.TempDir(), fmt.Sprintf("%s-%d.log", role, n))}
	c.start()
	t.Cleanup(func() {
		c.kill()
		if b, err := os.ReadFile(c.log); err == nil && bytes.Contains(b, []byte("WARNING: DATA RACE")) {
			t.Errorf("the race detector found a data race in %s %d (log %s)", role, n, c.log)
		}
		if t.Failed() || os.Getenv("OUTBOX_FAULTS_LOGS") != "" {
			if b, err := os.ReadFile(c.log); err == nil && len(b) > 0 {
				if len(b) > 4000 {
					b = b[len(b)-4000:]
				}
				t.Logf("%s %d log (end):\n%s", role, n, b)
			}
		}
	})
	return c
}

func (c *child) start() {
	c.t.Helper()
	spec, _ := json.Marshal(c.spec)
	f, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+c.role, specEnv+"="+string(spec))
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", c.role, err)
	}
	c.mu.Lock()
	c.cmd = cmd
	c.mu.Unlock()
}

// kill SIGKILLs the process, if running, and reaps it.
func (c *child) kill() {
	c.mu.Lock()
	cmd := c.cmd
	c.cmd = nil
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	// It must have run until killed: a child that exited by itself (a
	// panic, a fatal error) would leave the other relay to do its work
	// unnoticed.
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && !ws.Signaled() {
		c.t.Errorf("%s exited by itself (%v) before it was killed; see its log", c.role, cmd.ProcessState)
	}
	if c.spec.StatsFile == "" {
		return
	}
	var st inbox.Stats
	if b, err := os.ReadFile(c.spec.StatsFile); err == nil && json.Unmarshal(b, &st) == nil {
		if c.t.Failed() || os.Getenv("OUTBOX_FAULTS_LOGS") != "" {
			c.t.Logf("%s killed; its inbox stats: %+v", c.role, st)
		}
		c.mu.Lock()
		c.skipped += st.Duplicates
		c.mu.Unlock()
	}
	_ = os.Remove(c.spec.StatsFile)
}

// waitWorking waits until the consumer (this run of it) has committed a
// batch, that is until it has joined its group, so that a kill does not
// land in the middle of a join: kfake starts a member's session timer
// only once a join's answer has reached it, so a member killed while
// joining would hold its partitions for ever (real Kafka expires it after
// the session timeout).
func (c *child) waitWorking() {
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		var st inbox.Stats
		if b, err := os.ReadFile(c.spec.StatsFile); err == nil && json.Unmarshal(b, &st) == nil && st.Batches > 0 {
			return
		}
	}
	c.t.Errorf("the inbox consumer committed no batch within 60 s of its start")
}

// killInWindow has the consumer SIGKILLed right after a batch's commit,
// before its offsets are committed (a kill at the worst point), or, if it
// commits no batch within 30 s, wherever it is.
func (c *child) killInWindow() {
	_ = os.Remove(c.spec.StatsFile + ".inwindow")
	_ = os.WriteFile(c.spec.StatsFile+".killme", nil, 0o644)
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(c.spec.StatsFile + ".inwindow"); err == nil {
			break
		}
	}
	c.kill()
	_ = os.Remove(c.spec.StatsFile + ".killme")
	_ = os.Remove(c.spec.StatsFile + ".inwindow")
}

// redeliveries returns the duplicates the consumer's runs skipped so far
// (each run's count as of its last report, at most 100 ms old).
func (c *child) redeliveries() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.skipped
}

// writers runs n goroutines, each updating random accounts in
// transactions of their own, until stop is called; stop returns the
// commits and failed transactions.
func writers(db *gorm.DB, n, keys int) (stop func() (commits, failed int64)) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ok, bad atomic.Int64
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				name := keyName(rand.IntN(keys))
				err := db.Transaction(func(tx *gorm.DB) error {
					var a Account
					if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("name = ?", name).Take(&a).Error; err != nil {
						return err
					}
					return tx.Model(&a).Update("version", a.Version+1).Error
				})
				if err != nil {
					bad.Add(1)
					time.Sleep(50 * time.Millisecond)
				} else {
					ok.Add(1)
				}
				time.Sleep(time.Duration(2+rand.IntN(10)) * time.Millisecond)
			}
		}()
	}
	return func() (int64, int64) {
		cancel()
		wg.Wait()
		return ok.Load(), bad.Load()
	}
}

func keyName(i int) string { return fmt.Sprintf("acct-%03d", i) }

// committedChanges reads the committed changes from the business table.
func committedChanges(t *testing.T, db *gorm.DB) []Committed {
	t.Helper()
	var accts []Account
	var err error
	for end := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		if err = db.Order("id").Find(&accts).Error; err == nil || time.Now().After(end) {
			break
		}
	}
	if err != nil {
		t.Fatalf("read the business table: %v", err)
	}
	var c []Committed
	for _, a := range accts {
		for v := int64(1); v <= a.Version; v++ {
			c = append(c, Committed{Key: a.Name, Seq: v})
		}
	}
	return c
}

// reader consumes the topic from its start, in the background, keeping
// every record once (by partition and offset) in the order fetched.
type reader struct {
	mu       sync.Mutex
	recs     []Delivered
	distinct map[change]bool
	next     map[int32]int64
	bad      []string
}

func startReader(t *testing.T, brokers []string) *reader {
	t.Helper()
	r := &reader{distinct: map[change]bool{}, next: map[int32]int64{}}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			fs.EachRecord(r.add)
		}
	}()
	t.Cleanup(func() { cancel(); <-done; cl.Close() })
	return r
}

func (r *reader) add(rec *kgo.Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if next, ok := r.next[rec.Partition]; ok && rec.Offset < next {
		return // fetched again (a client reset): the topic holds it once
	}
	r.next[rec.Partition] = rec.Offset + 1
	var v struct{ Version int64 }
	if err := json.Unmarshal(rec.Value, &v); err != nil || v.Version == 0 {
		r.bad = append(r.bad, string(rec.Value))
		return
	}
	d := Delivered{Key: string(rec.Key), Seq: v.Version}
	for _, h := range rec.Headers {
		if h.Key == gormoutbox.HeaderEventID {
			d.EventID = string(h.Value)
		}
	}
	r.recs = append(r.recs, d)
	r.distinct[change{d.Key, d.Seq}] = true
}

// covers reports whether the topic holds every committed change.
func (r *reader) covers(c []Committed) (bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, x := range c {
		if r.distinct[change{x.Key, x.Seq}] {
			n++
		}
	}
	return n == len(c), n
}

func (r *reader) delivered() ([]Delivered, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Delivered(nil), r.recs...), append([]string(nil), r.bad...)
}

// ownServer is a database server of the suite's own (scripts/servers.sh
// with a state directory of its own and free ports), for the fault that
// kills the server: the shared servers are never touched.
type ownServer struct {
	t       *testing.T
	service string // postgres or mysql
	dir     string
	root    string
	env     []string
	dsn     string
}

func startOwnServer(t *testing.T, dialect string) *ownServer {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// Under /var/tmp, like the shared servers: the servers' OS users must
	// be able to reach it (t.TempDir is private to root).
	sweepOwnServers(t, root)
	dir, err := os.MkdirTemp("/var/tmp", ownServerPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &ownServer{t: t, service: dialect, dir: dir, root: root}
	portVar := "OUTBOX_PG_PORT"
	if dialect == "mysql" {
		portVar = "OUTBOX_MYSQL_PORT"
	}
	s.env = append(os.Environ(), "OUTBOX_STATE_DIR="+dir, portVar+"="+strconv.Itoa(freePort(t)))
	t.Cleanup(func() {
		if out, err := s.script("down", s.service); err != nil {
			t.Logf("servers.sh down %s: %v\n%s", s.service, err, out)
		}
		_ = os.RemoveAll(dir)
	})
	s.up()
	env, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	key := testenv.PostgresEnv
	if dialect == "mysql" {
		key = testenv.MySQLEnv
	}
	sc := bufio.NewScanner(bytes.NewReader(env))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "="); ok && k == key {
			s.dsn = strings.Trim(v, `"'`)
		}
	}
	if s.dsn == "" {
		t.Fatalf("%s/env has no %s:\n%s", dir, key, env)
	}
	return s
}

// ownServerPrefix names the state directories of the suite's servers.
const ownServerPrefix = "go-outbox-faults-"

// sweepOwnServers stops and removes the servers of earlier runs of the
// suite that died without cleaning up (killed, timed out): those whose
// owner.pid is no longer a running process.
func sweepOwnServers(t *testing.T, root string) {
	dirs, _ := filepath.Glob(filepath.Join("/var/tmp", ownServerPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "owner.pid"))
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(string(b)); err != nil || alive(pid) {
			continue
		}
		old := &ownServer{dir: dir, root: root, env: append(os.Environ(), "OUTBOX_STATE_DIR="+dir)}
		out, err := old.script("down")
		t.Logf("removed the servers of a dead run of the suite in %s (down: %v)\n%s", dir, err, out)
		_ = os.RemoveAll(dir)
	}
}

func (s *ownServer) script(args ...string) ([]byte, error) {
	cmd := exec.Command("bash", append([]string{filepath.Join(s.root, "scripts", "servers.sh")}, args...)...)
	cmd.Env = s.env
	return cmd.CombinedOutput()
}

func (s *ownServer) up() {
	s.t.Helper()
	if out, err := s.script("up", s.service); err != nil {
		s.t.Fatalf("servers.sh up %s (own instance in %s): %v\n%s", s.service, s.dir, err, out)
	}
}

// crash SIGKILLs the server and its processes, as a machine's crash or
// the OOM killer would, and waits until they are gone.
func (s *ownServer) crash() {
	s.t.Helper()
	pidFile := filepath.Join(s.dir, "postgres", "data", "postmaster.pid")
	if s.service == "mysql" {
		pidFile = filepath.Join(s.dir, "mysql", "run", "mariadbd.pid")
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		s.t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		s.t.Fatalf("%s: %v", pidFile, err)
	}
	pids := append(childrenOf(pid), pid)
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	// Wait until the process is reaped too: a zombie still answers
	// kill -0, and the start script would take it for a running server.
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return
		}
	}
	if alive(pid) {
		s.t.Fatalf("%s server pid %d still runs 30s after SIGKILL", s.service, pid)
	}
	s.t.Logf("%s server pid %d is a zombie 30s after SIGKILL", s.service, pid)
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// nopPublisher is the Publisher of the relay the test uses for Stats only.
type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, []gormoutbox.Message) error {
	return errors.New("not for publishing")
}

// logGroup logs the inbox consumer group as the broker sees it: its
// members and their partitions, and its committed offsets against the
// partitions' ends (what a stuck consumer has not read).
func logGroup(t *testing.T, brokers []string, group string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Logf("group %s: %v", group, err)
		return
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dreq := kmsg.NewPtrDescribeGroupsRequest()
	dreq.Groups = []string{group}
	dres, err := dreq.RequestWith(ctx, cl)
	if err != nil {
		t.Logf("describe group %s: %v", group, err)
		return
	}
	for _, g := range dres.Groups {
		t.Logf("group %s: state %s, protocol %s, %d members", g.Group, g.State, g.Protocol, len(g.Members))
		for _, m := range g.Members {
			var a kmsg.ConsumerMemberAssignment
			_ = a.ReadFrom(m.MemberAssignment)
			var parts []string
			for _, tp := range a.Topics {
				parts = append(parts, fmt.Sprintf("%s%v", tp.Topic, tp.Partitions))
			}
			t.Logf("  member %s (%s): %s", m.MemberID, m.ClientHost, strings.Join(parts, " "))
		}
	}
	oreq := kmsg.NewPtrOffsetFetchRequest()
	oreq.Group = group
	ores, err := oreq.RequestWith(ctx, cl)
	if err != nil {
		t.Logf("offsets of group %s: %v", group, err)
		return
	}
	lreq := kmsg.NewPtrListOffsetsRequest()
	lt := kmsg.NewListOffsetsRequestTopic()
	lt.Topic = topic
	for p := int32(0); p < 4; p++ {
		lp := kmsg.NewListOffsetsRequestTopicPartition()
		lp.Partition, lp.Timestamp = p, -1
		lt.Partitions = append(lt.Partitions, lp)
	}
	lreq.Topics = append(lreq.Topics, lt)
	ends := map[int32]int64{}
	if lres, err := lreq.RequestWith(ctx, cl); err == nil {
		for _, tp := range lres.Topics {
			for _, p := range tp.Partitions {
				ends[p.Partition] = p.Offset
			}
		}
	}
	for _, tp := range ores.Topics {
		for _, p := range tp.Partitions {
			t.Logf("  %s/%d: committed %d, end %d", tp.Topic, p.Partition, p.Offset, ends[p.Partition])
		}
	}
}
