package qmp

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync/atomic"
	"time"
)

// Names of events a VM manager follows (QAPI run-state.json, machine.json).
const (
	EventShutdown      = "SHUTDOWN"       // QEMU is exiting or the guest powered off; data: ShutdownInfo
	EventPowerdown     = "POWERDOWN"      // the ACPI power button was pressed (the guest may ignore it)
	EventReset         = "RESET"          // the machine was reset; data: ShutdownInfo
	EventStop          = "STOP"           // the guest was paused
	EventResume        = "RESUME"         // the guest was resumed
	EventSuspend       = "SUSPEND"        // the guest entered S3
	EventWakeup        = "WAKEUP"         // the guest left S3
	EventGuestPanicked = "GUEST_PANICKED" // the guest panicked (pvpanic)
	EventBalloonChange = "BALLOON_CHANGE" // the balloon's size changed; data: {"actual": bytes}
)

// Event is an asynchronous message from QEMU.
type Event struct {
	// Name is the event's name, such as "SHUTDOWN".
	Name string
	// Data is the event's "data" member, nil when it has none.
	Data json.RawMessage
	// Time is when QEMU emitted the event (zero if it could not say).
	Time time.Time
}

// DecodeData decodes the event's data into v.
func (e Event) DecodeData(v any) error {
	if e.Data == nil {
		return fmt.Errorf("qmp: event %s has no data", e.Name)
	}
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("qmp: event %s: decode data: %w", e.Name, err)
	}
	return nil
}

// ShutdownInfo is the data of SHUTDOWN and RESET events.
type ShutdownInfo struct {
	// Guest is true when the guest asked for it, false when the host did.
	Guest bool `json:"guest"`
	// Reason is QEMU's ShutdownCause: "host-qmp-quit", "host-signal",
	// "guest-shutdown", "guest-reset", "guest-panic", ...
	Reason string `json:"reason"`
}

// Subscription receives the events of one client. Events are delivered on
// C in the order QEMU sent them; when C's buffer is full the oldest event in
// it is dropped to make room, so a slow reader loses old events but never
// holds up the client. C is closed by [Subscription.Close] and when the
// connection ends.
type Subscription struct {
	C <-chan Event

	ch      chan Event
	c       *Client
	names   []string // nil: every event
	dropped atomic.Uint64
}

// Subscribe returns a subscription to the events named in names (every
// event when there are none), with room for buffer undelivered events (at
// least 1). Events QEMU sent before Subscribe are not replayed: subscribe,
// then query the state. On a closed client, C is already closed.
func (c *Client) Subscribe(buffer int, names ...string) *Subscription {
	buffer = max(buffer, 1)
	s := &Subscription{ch: make(chan Event, buffer), c: c}
	s.C = s.ch
	if len(names) > 0 {
		s.names = slices.Clone(names)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause != nil {
		close(s.ch)
		return s
	}
	c.subs[s] = struct{}{}
	return s
}

// Close ends the subscription and closes C. It is safe to call more than
// once, and concurrently with the client's end.
func (s *Subscription) Close() {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if _, ok := s.c.subs[s]; ok {
		delete(s.c.subs, s)
		close(s.ch)
	}
}

// Dropped returns how many events were dropped because C was full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Wait returns the next event named in names (any event when there are
// none), discarding the others. It fails when ctx ends or when the
// connection ends first.
func (s *Subscription) Wait(ctx context.Context, names ...string) (Event, error) {
	for {
		select {
		case ev, ok := <-s.C:
			if !ok {
				if cause := s.c.ended(); cause != nil {
					return Event{}, fmt.Errorf("qmp: wait for event %v: %w", names, cause)
				}
				return Event{}, fmt.Errorf("qmp: wait for event %v: subscription closed", names)
			}
			if len(names) == 0 || slices.Contains(names, ev.Name) {
				return ev, nil
			}
		case <-ctx.Done():
			return Event{}, fmt.Errorf("qmp: wait for event %v: %w", names, ctx.Err())
		}
	}
}

// publish hands ev to every interested subscription without blocking. It
// runs on the reading goroutine, so subscriptions see events in order and
// before any reply that followed them on the wire.
func (c *Client) publish(ev Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := range c.subs {
		if s.names == nil || slices.Contains(s.names, ev.Name) {
			s.deliver(ev)
		}
	}
}

// deliver queues ev, dropping the oldest queued event while the buffer is
// full. The reading goroutine is the only sender, so this ends quickly.
func (s *Subscription) deliver(ev Event) {
	for {
		select {
		case s.ch <- ev:
			return
		default:
		}
		select {
		case <-s.ch:
			s.dropped.Add(1)
		default:
		}
	}
}
