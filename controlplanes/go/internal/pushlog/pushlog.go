// Package pushlog keeps a bounded record of every xDS response sent and
// every ACK/NACK received, served as /debug/pushes in the same JSON shape
// as meshbed's reference control plane.
package pushlog

import (
	"sync"
	"time"
)

// Event kinds.
const (
	Sent = "sent"
	Ack  = "ack"
	Nack = "nack"
)

// Event is one push or one answer to it.
type Event struct {
	TS        float64  `json:"ts"` // unix seconds
	Node      string   `json:"node"`
	Type      string   `json:"type"` // CDS | EDS | LDS | RDS
	Version   string   `json:"version"`
	Nonce     string   `json:"nonce"`
	Event     string   `json:"event"` // sent | ack | nack
	Error     string   `json:"error"`
	Resources []string `json:"resources"`
}

// Log is a ring buffer of events; the oldest fall off past its size.
type Log struct {
	mu    sync.Mutex
	buf   []Event
	start int // index of the oldest event when full
	full  bool
	now   func() time.Time
}

// New makes a log holding at most size events.
func New(size int) *Log {
	if size < 1 {
		size = 1
	}
	return &Log{buf: make([]Event, 0, size), now: time.Now}
}

// Record appends an event stamped with the current time and returns it.
func (l *Log) Record(e Event) Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.TS = float64(l.now().UnixNano()) / 1e9
	if e.Resources == nil {
		e.Resources = []string{}
	}
	if !l.full && len(l.buf) < cap(l.buf) {
		l.buf = append(l.buf, e)
		if len(l.buf) == cap(l.buf) {
			l.full = true
		}
		return e
	}
	l.buf[l.start] = e
	l.start = (l.start + 1) % len(l.buf)
	return e
}

// Since returns the events strictly newer than ts (unix seconds), oldest first.
func (l *Log) Since(ts float64) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := []Event{}
	n := len(l.buf)
	for i := 0; i < n; i++ {
		e := l.buf[(l.start+i)%n]
		if e.TS > ts {
			out = append(out, e)
		}
	}
	return out
}

// Len is the number of events held.
func (l *Log) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buf)
}
