package qmptest

import (
	"encoding/json"
	"fmt"
	"time"
)

// Rule scripts the server's answer to matching commands: a list of steps
// played in order. A rule without a reply step never answers (the command
// hangs, as behind a stuck QEMU). Build it with the chained methods right
// after [Server.On]; the server reads it from its own goroutines, so do not
// change a rule once clients may be using it.
type Rule struct {
	execute string
	args    any  // normalized JSON
	anyArgs bool // match any arguments
	times   int  // uses left; negative: unlimited
	async   bool
	steps   []func(c *conn, cmd Command) bool // false: stop playing
}

// On adds a rule for the command named execute, matching any arguments
// until [Rule.Args] narrows it. Rules are tried in the order they were
// added; the first one that matches and has uses left ([Rule.Times]) plays.
func (s *Server) On(execute string) *Rule {
	r := &Rule{execute: execute, anyArgs: true, times: -1}
	s.mu.Lock()
	s.rules = append(s.rules, r)
	s.mu.Unlock()
	return r
}

// Args makes the rule match only commands whose arguments equal args as
// JSON values (nil or an empty object for a command without arguments).
func (r *Rule) Args(args any) *Rule {
	b, err := json.Marshal(args)
	if err != nil {
		panic(fmt.Sprintf("qmptest: rule %s: arguments: %v", r.execute, err))
	}
	if string(b) == "null" {
		b = nil
	}
	v, err := normalize(b)
	if err != nil {
		panic(fmt.Sprintf("qmptest: rule %s: arguments: %v", r.execute, err))
	}
	r.args, r.anyArgs = v, false
	return r
}

// Times limits the rule to n uses; later commands fall through to the next
// matching rule.
func (r *Rule) Times(n int) *Rule {
	r.times = n
	return r
}

// Async plays the rule on a goroutine of its own, so that the server reads
// and answers later commands meanwhile: with a [Rule.Delay], its reply
// arrives after theirs (real QEMU answers in-band commands in order).
func (r *Rule) Async() *Rule {
	r.async = true
	return r
}

// Return replies with v as the "return" member (nil for {}).
func (r *Rule) Return(v any) *Rule {
	return r.Respond(func(Command) Reply { return Reply{Return: v} })
}

// Error replies with a QMP error of the given class ("GenericError",
// "DeviceNotActive", ...) and description.
func (r *Rule) Error(class, desc string) *Rule {
	return r.Respond(func(Command) Reply { return Reply{Class: class, Desc: desc} })
}

// Respond replies with whatever fn returns for the command.
func (r *Rule) Respond(fn func(cmd Command) Reply) *Rule {
	r.steps = append(r.steps, func(c *conn, cmd Command) bool {
		return c.sendReply(cmd, fn(cmd)) == nil
	})
	return r
}

// Event sends an event (data nil for none).
func (r *Rule) Event(name string, data any) *Rule {
	r.steps = append(r.steps, func(c *conn, _ Command) bool {
		return c.sendEvent(name, data) == nil
	})
	return r
}

// Delay pauses for d.
func (r *Rule) Delay(d time.Duration) *Rule {
	r.steps = append(r.steps, func(c *conn, _ Command) bool {
		return c.sleep(d)
	})
	return r
}

// Wait pauses until ch is closed (or the connection ends): the test decides
// when the rule goes on.
func (r *Rule) Wait(ch <-chan struct{}) *Rule {
	r.steps = append(r.steps, func(c *conn, _ Command) bool {
		select {
		case <-ch:
			return true
		case <-c.done:
			return false
		}
	})
	return r
}

// Raw writes b as is: garbage, a partial line, a reply for another id.
func (r *Rule) Raw(b string) *Rule {
	r.steps = append(r.steps, func(c *conn, _ Command) bool {
		return c.write([]byte(b)) == nil
	})
	return r
}

// Disconnect closes the connection.
func (r *Rule) Disconnect() *Rule {
	r.steps = append(r.steps, func(c *conn, _ Command) bool {
		c.close()
		return false
	})
	return r
}

// Do runs fn, for effects on the test's own state.
func (r *Rule) Do(fn func(cmd Command)) *Rule {
	r.steps = append(r.steps, func(_ *conn, cmd Command) bool {
		fn(cmd)
		return true
	})
	return r
}

func (r *Rule) matches(cmd Command) bool {
	if cmd.Execute != r.execute {
		return false
	}
	if r.anyArgs {
		return true
	}
	v, err := normalize(cmd.Arguments)
	return err == nil && sameJSON(v, r.args)
}

func (r *Rule) play(c *conn, cmd Command) {
	for _, step := range r.steps {
		if !step(c, cmd) {
			return
		}
	}
}
