// Package qmptest serves a scripted fake QEMU monitor, for testing code that
// speaks QMP, the way net/http/httptest serves net/http.
//
// A [Server] greets each client as QEMU 7.2 does, insists on
// qmp_capabilities first, and then answers commands by the rules a test
// scripted with [Server.On]: a rule matches a command by name (and
// arguments, when given) and plays its steps in order: events, delays,
// replies, raw bytes, a disconnect. A command no rule matches gets QEMU's
// CommandNotFound error. The test can also inject events, raw bytes and
// disconnects at any time, and inspect the commands received.
//
// Connections come from [Server.Pipe] (one end of a [net.Pipe]) or from a
// unix listener ([NewUnixServer], [Server.Serve]). A listener serves one
// client at a time, like QEMU's -qmp: a second client connects, but gets no
// greeting until the first has gone.
//
// [Server.EmulateVM] scripts a small QEMU-like machine (run state, pty,
// vCPU threads) for tests of code built on package qmp.
package qmptest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"
)

// DefaultGreeting is the greeting of Debian 12's QEMU 7.2.
const DefaultGreeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}`

// Command is a command the server received.
type Command struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
	// ID is the command's id, echoed verbatim in the reply; nil when the
	// client sent none.
	ID json.RawMessage `json:"id,omitempty"`
}

// Reply is an answer to a command: an error when Class is set, else Return
// (nil stands for {}).
type Reply struct {
	Return any
	Class  string
	Desc   string
}

// Server is a fake QMP server. Set its fields before it serves its first
// client; script it with On at any time.
type Server struct {
	// Greeting is the first line sent to each client; DefaultGreeting
	// when empty.
	Greeting string
	// GreetingDelay delays the greeting.
	GreetingDelay time.Duration
	// Now stamps events; time.Now when nil.
	Now func() time.Time

	mu       sync.Mutex
	rules    []*Rule
	conns    map[*conn]struct{}
	commands []Command
	ln       net.Listener
	closed   bool
	wg       sync.WaitGroup
	path     string
}

// NewServer returns a server that serves nothing yet: see [Server.Pipe]
// and [Server.Serve].
func NewServer() *Server {
	return &Server{conns: make(map[*conn]struct{})}
}

// NewUnixServer returns a server listening on a fresh unix socket (see
// [Server.Path]), closed and removed when tb's test ends.
func NewUnixServer(tb testing.TB) *Server {
	tb.Helper()
	// Not tb.TempDir: its long names can overflow a socket path's 108 bytes.
	dir, err := os.MkdirTemp("", "qmptest")
	if err != nil {
		tb.Fatalf("qmptest: %v", err)
	}
	path := filepath.Join(dir, "qmp.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		os.RemoveAll(dir)
		tb.Fatalf("qmptest: %v", err)
	}
	s := NewServer()
	s.path = path
	s.Serve(ln)
	tb.Cleanup(func() {
		s.Close()
		os.RemoveAll(dir)
	})
	return s
}

// Path returns the socket path of a server made by [NewUnixServer].
func (s *Server) Path() string { return s.path }

// Pipe returns the client end of a new [net.Pipe] whose other end the
// server serves.
func (s *Server) Pipe() net.Conn {
	client, server := net.Pipe()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		server.Close()
		return client
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.serveConn(server)
	}()
	return client
}

// Serve accepts clients on ln in the background and serves them one at a
// time, as QEMU does. The server closes ln when it is closed.
func (s *Server) Serve(ln net.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ln = ln
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.serveConn(nc)
		}
	}()
}

// Close disconnects every client, stops listening, and waits for the
// server's goroutines.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		c.close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Commands returns the commands received so far, qmp_capabilities included,
// in order.
func (s *Server) Commands() []Command {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Command(nil), s.commands...)
}

// Executed returns the names of the commands received so far, in order,
// qmp_capabilities left out.
func (s *Server) Executed() []string {
	var names []string
	for _, c := range s.Commands() {
		if c.Execute != "qmp_capabilities" {
			names = append(names, c.Execute)
		}
	}
	return names
}

// Event sends an event to every client that completed capabilities
// negotiation (QEMU sends none before) and returns how many got it.
func (s *Server) Event(name string, data any) int {
	n := 0
	for _, c := range s.clients() {
		if c.negotiated() && c.sendEvent(name, data) == nil {
			n++
		}
	}
	return n
}

// Raw writes raw bytes to every client, negotiated or not.
func (s *Server) Raw(b string) {
	for _, c := range s.clients() {
		c.write([]byte(b))
	}
}

// Disconnect closes every client's connection; the server keeps listening.
func (s *Server) Disconnect() {
	for _, c := range s.clients() {
		c.close()
	}
}

func (s *Server) clients() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	return cs
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// conn is one client connection.
type conn struct {
	s     *Server
	nc    net.Conn
	wmu   sync.Mutex
	done  chan struct{}
	once  sync.Once
	mu    sync.Mutex
	negot bool
}

func (c *conn) close() {
	c.once.Do(func() {
		close(c.done)
		c.nc.Close()
	})
}

func (c *conn) negotiated() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.negot
}

func (c *conn) setNegotiated() {
	c.mu.Lock()
	c.negot = true
	c.mu.Unlock()
}

// write sends b whole, or not at all if the connection has ended.
func (c *conn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	select {
	case <-c.done:
		return net.ErrClosed
	default:
	}
	_, err := c.nc.Write(b)
	return err
}

// send writes v as one CRLF-terminated JSON line, as QEMU does.
func (c *conn) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.write(append(b, '\r', '\n'))
}

func (c *conn) sendEvent(name string, data any) error {
	t := c.s.now()
	ev := map[string]any{
		"event": name,
		"timestamp": map[string]int64{
			"seconds":      t.Unix(),
			"microseconds": int64(t.Nanosecond() / 1000),
		},
	}
	if data != nil {
		ev["data"] = data
	}
	return c.send(ev)
}

func (c *conn) sendReply(cmd Command, r Reply) error {
	m := map[string]any{}
	if r.Class != "" {
		m["error"] = map[string]string{"class": r.Class, "desc": r.Desc}
	} else if r.Return == nil {
		m["return"] = struct{}{}
	} else {
		m["return"] = r.Return
	}
	if cmd.ID != nil {
		m["id"] = cmd.ID
	}
	return c.send(m)
}

// sleep waits d, or less if the connection ends; it reports whether the
// connection is still up.
func (c *conn) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.done:
		return false
	}
}

func (s *Server) serveConn(nc net.Conn) {
	c := &conn{s: s, nc: nc, done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		c.close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()

	if s.GreetingDelay > 0 && !c.sleep(s.GreetingDelay) {
		return
	}
	greeting := s.Greeting
	if greeting == "" {
		greeting = DefaultGreeting
	}
	if c.write([]byte(greeting+"\r\n")) != nil {
		return
	}
	dec := json.NewDecoder(nc)
	for {
		var cmd Command
		if err := dec.Decode(&cmd); err != nil {
			var syntax *json.SyntaxError
			if errors.As(err, &syntax) {
				c.sendReply(Command{}, Reply{Class: "GenericError", Desc: "JSON parse error, " + err.Error()})
			}
			return
		}
		s.mu.Lock()
		s.commands = append(s.commands, cmd)
		s.mu.Unlock()

		var r *Rule
		if c.negotiated() || cmd.Execute == "qmp_capabilities" {
			r = s.match(cmd)
		}
		if r != nil {
			if cmd.Execute == "qmp_capabilities" {
				c.setNegotiated()
			}
			if r.async {
				s.wg.Add(1)
				go func() {
					defer s.wg.Done()
					r.play(c, cmd)
				}()
			} else {
				r.play(c, cmd)
			}
			continue
		}
		switch {
		case cmd.Execute == "qmp_capabilities" && !c.negotiated():
			c.setNegotiated()
			c.sendReply(cmd, Reply{})
		case cmd.Execute == "qmp_capabilities":
			c.sendReply(cmd, Reply{Class: "CommandNotFound", Desc: "Capabilities negotiation is already complete, command ignored"})
		case !c.negotiated():
			c.sendReply(cmd, Reply{Class: "CommandNotFound", Desc: "Expecting capabilities negotiation with 'qmp_capabilities'"})
		default:
			c.sendReply(cmd, Reply{Class: "CommandNotFound", Desc: fmt.Sprintf("The command %s has not been found", cmd.Execute)})
		}
	}
}

// match returns the first rule that matches cmd and has uses left, and
// counts the use.
func (s *Server) match(cmd Command) *Rule {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.rules {
		if r.times == 0 || !r.matches(cmd) {
			continue
		}
		if r.times > 0 {
			r.times--
		}
		return r
	}
	return nil
}

// normalize decodes JSON into plain Go values, for comparing arguments.
func normalize(raw []byte) (any, error) {
	var v any
	if len(raw) == 0 {
		return map[string]any{}, nil
	}
	err := json.Unmarshal(raw, &v)
	return v, err
}

// sameJSON reports whether a and b are equal JSON values.
func sameJSON(a, b any) bool {
	return reflect.DeepEqual(a, b)
}
