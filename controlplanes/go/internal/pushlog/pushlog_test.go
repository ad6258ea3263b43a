package pushlog

import (
	"testing"
	"time"
)

func TestRingBufferKeepsNewest(t *testing.T) {
	l := New(3)
	clock := time.Unix(1000, 0)
	l.now = func() time.Time { clock = clock.Add(time.Second); return clock }
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		l.Record(Event{Node: n, Event: Sent})
	}
	got := l.Since(0)
	if len(got) != 3 || got[0].Node != "c" || got[2].Node != "e" {
		t.Fatalf("%+v", got)
	}
	if got := l.Since(1004); len(got) != 1 || got[0].Node != "e" {
		t.Fatalf("since: %+v", got)
	}
	if got[0].Resources == nil {
		t.Fatal("resources must be [] not null in JSON")
	}
}
