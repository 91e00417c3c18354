package qmp_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmtui/vmtui/vm/qmp"
	"github.com/vmtui/vmtui/vm/qmp/qmptest"
)

// timeout bounds every step of these tests; generous, for loaded machines.
const timeout = 30 * time.Second

func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// connect returns a client of s over a pipe, closed when the test ends.
func connect(t *testing.T, s *qmptest.Server) *qmp.Client {
	t.Helper()
	c, err := qmp.New(testCtx(t, timeout), s.Pipe())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestHandshake(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(s *qmptest.Server)
		ctx     time.Duration
		wantErr []error  // errors.Is targets
		wantMsg string   // substring of the error
		wantVer string   // on success
		wantCap []string // on success
	}{
		{
			name:    "qemu 7.2 greeting",
			wantVer: "7.2.22",
			wantCap: []string{"oob"},
		},
		{
			name: "late greeting within the deadline",
			setup: func(s *qmptest.Server) {
				s.GreetingDelay = 50 * time.Millisecond
				s.Greeting = `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 9}, "package": ""}, "capabilities": []}}`
			},
			wantVer: "9.0.0",
			wantCap: []string{},
		},
		{
			name:    "no greeting before the deadline",
			setup:   func(s *qmptest.Server) { s.GreetingDelay = time.Hour },
			ctx:     100 * time.Millisecond,
			wantErr: []error{qmp.ErrBusy, context.DeadlineExceeded},
			wantMsg: "qmp: monitor busy: another client is connected",
		},
		{
			name:    "not a greeting",
			setup:   func(s *qmptest.Server) { s.Greeting = `{"return": {}}` },
			wantMsg: "not a QMP greeting",
		},
		{
			name:    "garbage instead of a greeting",
			setup:   func(s *qmptest.Server) { s.Greeting = "SSH-2.0-OpenSSH_9.2" },
			wantMsg: "not a QMP greeting",
		},
		{
			name:    "capabilities refused",
			setup:   func(s *qmptest.Server) { s.On("qmp_capabilities").Error("GenericError", "no thanks") },
			wantMsg: "qmp: negotiate capabilities: no thanks (GenericError)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := qmptest.NewServer()
			t.Cleanup(s.Close)
			if tt.setup != nil {
				tt.setup(s)
			}
			d := tt.ctx
			if d == 0 {
				d = timeout
			}
			c, err := qmp.New(testCtx(t, d), s.Pipe())
			if tt.wantMsg != "" || tt.wantErr != nil {
				if err == nil {
					c.Close()
					t.Fatalf("New: got no error, want %q", tt.wantMsg)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("New: got %q, want it to contain %q", err, tt.wantMsg)
				}
				for _, target := range tt.wantErr {
					if !errors.Is(err, target) {
						t.Errorf("New: got %q, want errors.Is %v", err, target)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer c.Close()
			if got := c.Version().String(); got != tt.wantVer {
				t.Errorf("Version: got %s, want %s", got, tt.wantVer)
			}
			if got := fmt.Sprint(c.Capabilities()); got != fmt.Sprint(tt.wantCap) {
				t.Errorf("Capabilities: got %s, want %s", got, fmt.Sprint(tt.wantCap))
			}
			cmds := s.Commands()
			if len(cmds) != 1 || cmds[0].Execute != "qmp_capabilities" || cmds[0].ID == nil {
				t.Errorf("server received %+v, want one qmp_capabilities with an id", cmds)
			}
		})
	}
}

func TestVersionAtLeast(t *testing.T) {
	v := qmp.Version{Major: 7, Minor: 2, Micro: 22}
	for _, tt := range []struct {
		major, minor int
		want         bool
	}{{7, 2, true}, {7, 1, true}, {6, 9, true}, {7, 3, false}, {8, 0, false}} {
		if got := v.AtLeast(tt.major, tt.minor); got != tt.want {
			t.Errorf("%s.AtLeast(%d, %d): got %v, want %v", v, tt.major, tt.minor, got, tt.want)
		}
	}
}

func TestExecute(t *testing.T) {
	huge := strings.Repeat("x", 1<<20) // far above a line scanner's 64 KiB
	tests := []struct {
		name      string
		setup     func(s *qmptest.Server)
		command   string
		args      any
		want      any    // JSON of the decoded result
		wantClass string // QMP error class
		wantMsg   string
	}{
		{
			name:    "return value",
			setup:   func(s *qmptest.Server) { s.On("query-name").Return(map[string]string{"name": "vm1"}) },
			command: "query-name",
			want:    `{"name":"vm1"}`,
		},
		{
			name: "unknown members ignored",
			setup: func(s *qmptest.Server) {
				// id 2: the first command after qmp_capabilities.
				s.On("query-name").Raw(`{"return": {"name": "vm1"}, "id": 2, "future": [1, 2]}` + "\r\n")
			},
			command: "query-name",
			want:    `{"name": "vm1"}`,
		},
		{
			name: "arguments matched",
			setup: func(s *qmptest.Server) {
				s.On("balloon").Args(map[string]int{"value": 1}).Return("one")
				s.On("balloon").Args(map[string]int{"value": 2}).Return("two")
			},
			command: "balloon",
			args:    map[string]int{"value": 2},
			want:    `"two"`,
		},
		{
			name: "error class kept",
			setup: func(s *qmptest.Server) {
				s.On("query-balloon").Error("DeviceNotActive", "No balloon device has been activated")
			},
			command:   "query-balloon",
			wantClass: qmp.ClassDeviceNotActive,
			wantMsg:   "qmp: query-balloon: No balloon device has been activated (DeviceNotActive)",
		},
		{
			name:      "command not found",
			command:   "query-cpus",
			wantClass: qmp.ClassCommandNotFound,
			wantMsg:   "The command query-cpus has not been found",
		},
		{
			name:    "huge reply",
			setup:   func(s *qmptest.Server) { s.On("query-qmp-schema").Return(huge) },
			command: "query-qmp-schema",
			want:    `"` + huge + `"`,
		},
		{
			name:    "arguments that do not encode",
			command: "x",
			args:    map[string]any{"f": func() {}},
			wantMsg: "qmp: x: encode arguments",
		},
		{
			name:    "result that does not decode",
			setup:   func(s *qmptest.Server) { s.On("query-status").Return("not an object") },
			command: "query-status",
			wantMsg: "qmp: query-status: decode reply",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := qmptest.NewServer()
			t.Cleanup(s.Close)
			if tt.setup != nil {
				tt.setup(s)
			}
			c := connect(t, s)
			var result any
			if tt.command == "query-status" {
				result = new(qmp.Status)
			}
			var raw json.RawMessage
			if result == nil {
				result = &raw
			}
			err := c.Execute(testCtx(t, timeout), tt.command, tt.args, result)
			if got := qmp.ErrorClass(err); got != tt.wantClass {
				t.Errorf("error class: got %q, want %q (error %v)", got, tt.wantClass, err)
			}
			if tt.wantMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("error: got %v, want it to contain %q", err, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Execute: %v", err)
			}
			if string(raw) != tt.want {
				t.Errorf("result: got %.80s, want %.80s", raw, tt.want)
			}
		})
	}
}

func TestErrorAs(t *testing.T) {
	s := qmptest.NewServer()
	t.Cleanup(s.Close)
	s.On("balloon").Error("GenericError", "Invalid parameter type for 'value', expected: integer")
	c := connect(t, s)
	err := c.Execute(testCtx(t, timeout), "balloon", map[string]string{"value": "x"}, nil)
	var qe *qmp.Error
	if !errors.As(err, &qe) {
		t.Fatalf("got %v, want a *qmp.Error", err)
	}
	want := qmp.Error{Class: "GenericError", Desc: "Invalid parameter type for 'value', expected: integer"}
	if *qe != want {
		t.Errorf("got %+v, want %+v", *qe, want)
	}
}

func TestArgumentsOmitted(t *testing.T) {
	s := qmptest.NewServer()
	t.Cleanup(s.Close)
	s.On("stop").Return(nil)
	c := connect(t, s)
	var typedNil *struct{}
	for _, args := range []any{nil, typedNil} {
		if err := c.Execute(testCtx(t, timeout), "stop", args, nil); err != nil {
			t.Fatalf("stop: %v", err)
		}
	}
	for _, cmd := range s.Commands() {
		if cmd.Arguments != nil {
			t.Errorf("%s sent arguments %s, want none", cmd.Execute, cmd.Arguments)
		}
	}
}

// TestIDs checks that replies reach their callers by id, whatever their
// order, and that stray or late replies are dropped without harm.
func TestIDs(t *testing.T) {
	t.Run("out of order", func(t *testing.T) {
		s := qmptest.NewServer()
		t.Cleanup(s.Close)
		got, release := make(chan struct{}), make(chan struct{})
		s.On("slow").Async().Do(func(qmptest.Command) { close(got) }).Wait(release).Return("slow")
		s.On("fast").Return("fast")
		c := connect(t, s)

		slow := make(chan string, 1)
		go func() {
			var r string
			if err := c.Execute(testCtx(t, timeout), "slow", nil, &r); err != nil {
				r = err.Error()
			}
			slow <- r
		}()
		<-got
		var r string
		if err := c.Execute(testCtx(t, timeout), "fast", nil, &r); err != nil || r != "fast" {
			t.Fatalf("fast: got %q, %v, want \"fast\"", r, err)
		}
		close(release)
		if r := <-slow; r != "slow" {
			t.Errorf("slow: got %q, want \"slow\"", r)
		}
	})

	t.Run("late reply after deadline", func(t *testing.T) {
		s := qmptest.NewServer()
		t.Cleanup(s.Close)
		release := make(chan struct{})
		s.On("late").Async().Wait(release).Return("late").Event("LATE_SENT", nil)
		s.On("next").Return("next")
		c := connect(t, s)
		sub := c.Subscribe(4, "LATE_SENT")

		err := c.Execute(testCtx(t, 50*time.Millisecond), "late", nil, nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("late: got %v, want context.DeadlineExceeded", err)
		}
		close(release)
		if _, err := sub.Wait(testCtx(t, timeout), "LATE_SENT"); err != nil {
			t.Fatal(err)
		}
		var r string
		if err := c.Execute(testCtx(t, timeout), "next", nil, &r); err != nil || r != "next" {
			t.Errorf("next: got %q, %v, want \"next\"", r, err)
		}
	})

	t.Run("stray replies", func(t *testing.T) {
		s := qmptest.NewServer()
		t.Cleanup(s.Close)
		s.On("query-x").
			Raw(`{"return": 1, "id": 999999}` + "\r\n"). // nobody's
			Raw(`{"return": 2}` + "\r\n").               // no id
			Raw(`{"return": 3, "id": "vmtui-2"}` + "\r\n").
			Raw(`{"error": {"class": "GenericError", "desc": "JSON parse error"}}` + "\r\n").
			Raw(`[1, 2, 3]` + "\r\n"). // not an object
			Return(4)
		c := connect(t, s)
		var r int
		if err := c.Execute(testCtx(t, timeout), "query-x", nil, &r); err != nil || r != 4 {
			t.Errorf("got %d, %v, want 4", r, err)
		}
	})

	t.Run("garbage skipped", func(t *testing.T) {
		s := qmptest.NewServer()
		t.Cleanup(s.Close)
		s.On("query-x").Raw("}}not json at all{\r\n").Raw(`{"return": "bad", "id": x}` + "\r\n").Return("good")
		c := connect(t, s)
		var r string
		if err := c.Execute(testCtx(t, timeout), "query-x", nil, &r); err != nil || r != "good" {
			t.Errorf("got %q, %v, want \"good\"", r, err)
		}
	})

	t.Run("concurrent callers", func(t *testing.T) {
		s := qmptest.NewServer()
		t.Cleanup(s.Close)
		echo := func(cmd qmptest.Command) qmptest.Reply { return qmptest.Reply{Return: cmd.Arguments} }
		// Three rules answering at different speeds reorder the replies.
		s.On("echo").Args(map[string]int{"n": 0}).Respond(echo)
		for n := 1; n < 60; n++ {
			s.On("echo").Args(map[string]int{"n": n}).Async().Delay(time.Duration(n%3) * time.Millisecond).Respond(echo)
		}
		c := connect(t, s)
		sub := c.Subscribe(1) // never read: must not matter
		defer sub.Close()
		var wg sync.WaitGroup
		errs := make(chan error, 60)
		for n := range 60 {
			wg.Go(func() {
				var r struct{ N int }
				err := c.Execute(testCtx(t, timeout), "echo", map[string]int{"n": n}, &r)
				if err == nil && r.N != n {
					err = fmt.Errorf("echo %d: got %d", n, r.N)
				}
				if err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

func TestDeadline(t *testing.T) {
	t.Run("no reply", func(t *testing.T) {
		s := qmptest.NewServer()
		t.Cleanup(s.Close)
		s.On("hang").Async() // never answers
		s.On("query-x").Return(1)
		c := connect(t, s)
		// The deadline is all that ends the call; the bound only stops a
		// client that ignores it from hanging the test.
		errc := make(chan error, 1)
		go func() { errc <- c.Execute(testCtx(t, 50*time.Millisecond), "hang", nil, nil) }()
		var err error
		select {
		case err = <-errc:
		case <-time.After(timeout):
			t.Fatalf("Execute has not returned %v after its deadline", timeout)
		}
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "qmp: hang:") {
			t.Fatalf("got %v, want qmp: hang: context deadline exceeded", err)
		}
		if err := c.Execute(testCtx(t, timeout), "query-x", nil, nil); err != nil {
			t.Errorf("client unusable after a deadline: %v", err)
		}
	})

	t.Run("blocked write", func(t *testing.T) {
		// The server plays "busy" before reading again, so the next
		// command's write blocks on the unbuffered pipe.
		s := qmptest.NewServer()
		t.Cleanup(s.Close)
		got, release := make(chan struct{}), make(chan struct{})
		s.On("busy").Do(func(qmptest.Command) { close(got) }).Wait(release).Return("busy")
		s.On("query-x").Return("x")
		c := connect(t, s)
		busy := make(chan error, 1)
		go func() { busy <- c.Execute(testCtx(t, timeout), "busy", nil, nil) }()
		<-got
		err := c.Execute(testCtx(t, 50*time.Millisecond), "query-x", nil, nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("blocked write: got %v, want context.DeadlineExceeded", err)
		}
		close(release)
		if err := <-busy; err != nil {
			t.Fatalf("busy: %v", err)
		}
		var r string
		if err := c.Execute(testCtx(t, timeout), "query-x", nil, &r); err != nil || r != "x" {
			t.Errorf("after a timed-out write: got %q, %v, want \"x\"", r, err)
		}
	})

	t.Run("cancelled before", func(t *testing.T) {
		s := qmptest.NewServer()
		t.Cleanup(s.Close)
		c := connect(t, s)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := c.Execute(ctx, "query-x", nil, nil); !errors.Is(err, context.Canceled) {
			t.Errorf("got %v, want context.Canceled", err)
		}
	})
}

func TestEvents(t *testing.T) {
	t.Run("before the reply", func(t *testing.T) {
		s := qmptest.NewServer()
		t.Cleanup(s.Close)
		when := time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.UTC)
		s.Now = func() time.Time { return when }
		s.EmulateVM(&qmptest.VM{})
		c := connect(t, s)
		sub := c.Subscribe(8)
		if err := c.Stop(testCtx(t, timeout)); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-sub.C:
			if ev.Name != qmp.EventStop {
				t.Errorf("event: got %s, want STOP", ev.Name)
			}
			if want := when.Truncate(time.Microsecond); !ev.Time.Equal(want) {
				t.Errorf("event time: got %v, want %v", ev.Time, want)
			}
		default:
			t.Fatal("STOP not delivered by the time stop returned")
		}
	})

	t.Run("filtered, with data", func(t *testing.T) {
		s := qmptest.NewServer()
		t.Cleanup(s.Close)
		s.EmulateVM(&qmptest.VM{})
		c := connect(t, s)
		shutdowns := c.Subscribe(8, qmp.EventShutdown)
		ctx := testCtx(t, timeout)
		if err := c.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Quit(ctx); err != nil {
			t.Fatal(err)
		}
		ev, ok := <-shutdowns.C
		if !ok || ev.Name != qmp.EventShutdown {
			t.Fatalf("got %v %v, want SHUTDOWN", ev, ok)
		}
		var info qmp.ShutdownInfo
		if err := ev.DecodeData(&info); err != nil {
			t.Fatal(err)
		}
		if want := (qmp.ShutdownInfo{Guest: false, Reason: "host-qmp-quit"}); info != want {
			t.Errorf("SHUTDOWN data: got %+v, want %+v", info, want)
		}
		if ev, ok := <-shutdowns.C; ok {
			t.Errorf("got %v after SHUTDOWN, want the channel closed", ev)
		}
	})

	t.Run("slow subscriber drops the oldest", func(t *testing.T) {
		const n = 1000
		s := qmptest.NewServer()
		t.Cleanup(s.Close)
		flood := s.On("flood")
		for i := range n {
			flood.Event("TICK", map[string]int{"n": i})
		}
		flood.Return(nil)
		c := connect(t, s)
		slow := c.Subscribe(2)
		all := c.Subscribe(n)
		if err := c.Execute(testCtx(t, timeout), "flood", nil, nil); err != nil {
			t.Fatal(err)
		}
		if got := slow.Dropped(); got != n-2 {
			t.Errorf("dropped: got %d, want %d", got, n-2)
		}
		for _, want := range []int{n - 2, n - 1} {
			var d struct{ N int }
			if err := (<-slow.C).DecodeData(&d); err != nil || d.N != want {
				t.Errorf("kept event: got %d (%v), want %d", d.N, err, want)
			}
		}
		if got := len(all.C); got != n || all.Dropped() != 0 {
			t.Errorf("big subscriber: got %d events, %d dropped, want %d, 0", got, all.Dropped(), n)
		}
	})

	t.Run("injected by the test", func(t *testing.T) {
		s := qmptest.NewServer()
		t.Cleanup(s.Close)
		c := connect(t, s)
		sub := c.Subscribe(1, qmp.EventPowerdown)
		if n := s.Event("RTC_CHANGE", map[string]int{"offset": 1}); n != 1 {
			t.Fatalf("event sent to %d clients, want 1", n)
		}
		s.Event(qmp.EventPowerdown, nil)
		ev, err := sub.Wait(testCtx(t, timeout), qmp.EventPowerdown)
		if err != nil || ev.Data != nil {
			t.Errorf("got %+v, %v, want POWERDOWN without data", ev, err)
		}
	})

	t.Run("unsubscribe", func(t *testing.T) {
		s := qmptest.NewServer()
		t.Cleanup(s.Close)
		c := connect(t, s)
		sub := c.Subscribe(1)
		sub.Close()
		sub.Close()
		if _, ok := <-sub.C; ok {
			t.Error("C open after Close")
		}
		if _, err := sub.Wait(testCtx(t, timeout)); err == nil {
			t.Error("Wait on a closed subscription: got no error")
		}
		c.Close()
		if _, ok := <-c.Subscribe(1).C; ok {
			t.Error("Subscribe on a closed client: C open")
		}
	})
}

func TestDisconnect(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(s *qmptest.Server)
		command string
		act     func(s *qmptest.Server, c *qmp.Client) // while the command waits
		wantErr error                                  // from the command and from Err
		wantCmd error                                  // from the command, when it differs
	}{
		{
			name:    "server drops mid-call",
			setup:   func(s *qmptest.Server) { s.On("query-x").Disconnect() },
			command: "query-x",
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:    "partial reply then drop",
			setup:   func(s *qmptest.Server) { s.On("query-x").Raw(`{"return": {"na`).Disconnect() },
			command: "query-x",
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:    "test disconnects the server",
			setup:   func(s *qmptest.Server) { s.On("query-x").Async() },
			command: "query-x",
			act:     func(s *qmptest.Server, _ *qmp.Client) { s.Disconnect() },
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:    "client closed",
			setup:   func(s *qmptest.Server) { s.On("query-x").Async() },
			command: "query-x",
			act:     func(_ *qmptest.Server, c *qmp.Client) { c.Close() },
			wantErr: qmp.ErrClosed,
		},
		{
			name:    "quit answered",
			setup:   func(s *qmptest.Server) { s.EmulateVM(&qmptest.VM{}) },
			command: "quit",
			wantErr: qmp.ErrClosed,
		},
		{
			name:    "quit unanswered",
			setup:   func(s *qmptest.Server) { s.On("quit").Event("SHUTDOWN", nil).Disconnect() },
			command: "quit",
			wantErr: qmp.ErrClosed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := qmptest.NewServer()
			t.Cleanup(s.Close)
			tt.setup(s)
			c := connect(t, s)
			sub := c.Subscribe(4)
			errc := make(chan error, 1)
			go func() { errc <- c.Execute(testCtx(t, timeout), tt.command, nil, nil) }()
			if tt.act != nil {
				deadline := time.Now().Add(timeout)
				for len(s.Executed()) == 0 {
					if time.Now().After(deadline) {
						t.Fatalf("%s not received after %v", tt.command, timeout)
					}
					time.Sleep(time.Millisecond)
				}
				tt.act(s, c)
			}
			err := <-errc
			if tt.command == "quit" {
				if err != nil {
					t.Errorf("quit: got %v, want success", err)
				}
			} else if !errors.Is(err, tt.wantErr) {
				t.Errorf("%s: got %v, want errors.Is %v", tt.command, err, tt.wantErr)
			}
			select {
			case <-c.Done():
			case <-time.After(timeout):
				t.Fatal("Done not closed")
			}
			if err := c.Err(); !errors.Is(err, tt.wantErr) {
				t.Errorf("Err: got %v, want errors.Is %v", err, tt.wantErr)
			}
			for range sub.C { // must be closed
			}
			err = c.Execute(testCtx(t, timeout), "query-x", nil, nil)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("after the end: got %v, want errors.Is %v", err, tt.wantErr)
			}
		})
	}
}

func TestHelpers(t *testing.T) {
	s := qmptest.NewServer()
	t.Cleanup(s.Close)
	vm := &qmptest.VM{Status: "prelaunch", PTY: "/dev/pts/5", ThreadIDs: []int{100, 101}, IgnorePowerdown: true}
	s.EmulateVM(vm)
	s.On("query-balloon").Return(map[string]int64{"actual": 64 << 20})
	s.On("human-monitor-command").Args(map[string]string{"command-line": "info status"}).Return("VM status: paused\r\n")
	c := connect(t, s)
	ctx := testCtx(t, timeout)
	sub := c.Subscribe(16)

	status := func(want qmp.Status) {
		t.Helper()
		st, err := c.QueryStatus(ctx)
		if err != nil || st != want {
			t.Errorf("QueryStatus: got %+v, %v, want %+v", st, err, want)
		}
	}
	event := func(want string) {
		t.Helper()
		if ev, err := sub.Wait(ctx); err != nil || ev.Name != want {
			t.Errorf("event: got %q, %v, want %q", ev.Name, err, want)
		}
	}
	status(qmp.Status{Status: qmp.StatePrelaunch})
	if err := c.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	event(qmp.EventResume)
	status(qmp.Status{Status: qmp.StateRunning, Running: true})
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	event(qmp.EventStop)
	status(qmp.Status{Status: qmp.StatePaused})
	if err := c.SystemReset(ctx); err != nil {
		t.Fatal(err)
	}
	event(qmp.EventReset)
	if err := c.SystemPowerdown(ctx); err != nil {
		t.Fatal(err)
	}
	event(qmp.EventPowerdown)

	if pty, err := c.PTY(ctx, "ser0"); err != nil || pty != "/dev/pts/5" {
		t.Errorf("PTY(ser0): got %q, %v, want /dev/pts/5", pty, err)
	}
	if _, err := c.PTY(ctx, "compat_monitor0"); err == nil || !strings.Contains(err.Error(), "not a pty") {
		t.Errorf("PTY(compat_monitor0): got %v, want not a pty", err)
	}
	if _, err := c.PTY(ctx, "ser9"); err == nil || !strings.Contains(err.Error(), `no chardev "ser9"`) {
		t.Errorf("PTY(ser9): got %v, want no chardev", err)
	}
	cpus, err := c.QueryCPUsFast(ctx)
	if err != nil || len(cpus) != 2 || cpus[0].ThreadID != 100 || cpus[1].ThreadID != 101 || cpus[1].Index != 1 {
		t.Errorf("QueryCPUsFast: got %+v, %v, want threads 100 and 101", cpus, err)
	}
	if b, err := c.QueryBalloon(ctx); err != nil || b != 64<<20 {
		t.Errorf("QueryBalloon: got %d, %v, want %d", b, err, 64<<20)
	}
	if out, err := c.HumanMonitorCommand(ctx, "info status"); err != nil || out != "VM status: paused\r\n" {
		t.Errorf("HumanMonitorCommand: got %q, %v", out, err)
	}
	if err := c.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	event(qmp.EventShutdown)
	if vm.State() != "shutdown" {
		t.Errorf("fake VM state: got %q, want shutdown", vm.State())
	}
}

func TestChardevPTY(t *testing.T) {
	for _, tt := range []struct {
		filename string
		want     string
		ok       bool
	}{
		{"pty:/dev/pts/0", "/dev/pts/0", true},
		{"pty:", "", false},
		{"unix:/run/qmp.sock,server=on", "", false},
		{"file:/tmp/pty:x", "", false},
	} {
		got, ok := qmp.Chardev{Filename: tt.filename}.PTY()
		if got != tt.want || ok != tt.ok {
			t.Errorf("PTY(%q): got %q, %v, want %q, %v", tt.filename, got, ok, tt.want, tt.ok)
		}
	}
}

// TestPipeEOFBeforeGreeting uses a bare pipe: the peer closes at once.
func TestPipeEOFBeforeGreeting(t *testing.T) {
	client, server := net.Pipe()
	server.Close()
	_, err := qmp.New(testCtx(t, timeout), client)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("got %v, want io.ErrUnexpectedEOF", err)
	}
}
