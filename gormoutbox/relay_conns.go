package gormoutbox

import (
	"context"
	"database/sql"
	"sync"
	"time"
)

// connKeeper holds the relay's connections between passes, so that a pass
// does not wait for the application's pool — database/sql keeps 2 idle
// connections by default, and a PostgreSQL connection is a new server
// process: with busy writers the relay opened connections all the time
// (the latency benchmark's p99 was ~300 ms with the default pool).
type connKeeper struct {
	db    *sql.DB
	keep  int // most connections held; 0 holds none
	mu    sync.Mutex
	held  []heldConn
	timer *time.Timer // returns the connections idle for holdIdle
}

type heldConn struct {
	c    *sql.Conn
	used time.Time
}

// pingAfter is how long a held connection may sit unused before it is
// checked (a server or pooler may have closed it meanwhile).
const pingAfter = 2 * time.Second

// holdIdle is how long a held connection may sit unused before it is
// returned to the pool: a relay that is no longer used (or one whose
// scheduler ticks seldom) gives its connections back.
const holdIdle = 10 * time.Second

// get returns a held connection, else a new one from the pool; nil when
// the keeper holds none (the pass then uses the pool as it goes).
func (k *connKeeper) get(ctx context.Context) (*sql.Conn, error) {
	if k.keep <= 0 {
		return nil, nil
	}
	for {
		k.mu.Lock()
		if len(k.held) == 0 {
			k.mu.Unlock()
			return k.db.Conn(ctx)
		}
		h := k.held[len(k.held)-1]
		k.held = k.held[:len(k.held)-1]
		k.mu.Unlock()
		if time.Since(h.used) < pingAfter || h.c.PingContext(ctx) == nil {
			return h.c, nil
		}
		_ = h.c.Close() // gone: the pool discards it
	}
}

// put takes c back after a pass: held when ok and there is room (until
// unused for holdIdle), else closed (returned to the pool, which discards
// it if it is broken).
func (k *connKeeper) put(c *sql.Conn, ok bool) {
	if c == nil {
		return
	}
	if ok {
		k.mu.Lock()
		if len(k.held) < k.keep {
			k.held = append(k.held, heldConn{c, time.Now()})
			if k.timer == nil {
				k.timer = time.AfterFunc(holdIdle, k.expire)
			} else {
				k.timer.Reset(holdIdle)
			}
			k.mu.Unlock()
			return
		}
		k.mu.Unlock()
	}
	_ = c.Close()
}

// expire returns the connections unused for holdIdle to the pool.
func (k *connKeeper) expire() {
	k.mu.Lock()
	var old []heldConn
	kept := k.held[:0]
	for _, h := range k.held {
		if time.Since(h.used) >= holdIdle {
			old = append(old, h)
		} else {
			kept = append(kept, h)
		}
	}
	k.held = kept
	if len(kept) > 0 {
		k.timer.Reset(holdIdle)
	}
	k.mu.Unlock()
	for _, h := range old {
		_ = h.c.Close()
	}
}

// close returns every held connection to the pool.
func (k *connKeeper) close() {
	k.mu.Lock()
	held := k.held
	k.held = nil
	if k.timer != nil {
		k.timer.Stop()
	}
	k.mu.Unlock()
	for _, h := range held {
		_ = h.c.Close()
	}
}
