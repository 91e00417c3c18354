package qmp

import (
	"context"
	"time"
)

// Monitor keeps a long-lived watcher connected to one QMP socket: it dials,
// hands each new connection to a function, and redials with a backoff when
// the connection drops. Its zero value, with Path set, is ready to use.
//
// Events that fired while no client was connected are lost, so the function
// must re-query the state it needs on each connection (see the package
// documentation). QEMU serves one client per socket: a watcher that stays
// connected locks every other process out of that socket, so give it a
// socket of its own (a second -qmp option).
type Monitor struct {
	// Path is the QMP unix socket.
	Path string
	// DialTimeout bounds each attempt, the wait for the greeting
	// included. Default 5s.
	DialTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between failed attempts,
	// which doubles from one to the other. Defaults 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// Retry reports whether to try again after a failed dial; Run
	// returns the error when it says false. nil retries every error, so
	// Run returns only when ctx ends or fn fails. A watcher whose QEMU may
	// be gone should stop on errors such as [syscall.ENOENT] and
	// [syscall.ECONNREFUSED] (the socket file, or its listener, is gone).
	Retry func(err error) bool
}

// Run dials Path and calls fn with each new client, until ctx ends or fn
// returns an error. fn should return nil once c.Done() is closed, and Run
// redials after a short wait (MinBackoff, growing while connections keep
// ending quickly). Run closes c when fn returns, and also when ctx ends, so
// that a fn ranging over a subscription's channel returns then. Run returns
// ctx's error, fn's error, or a dial error that Retry declined.
func (m *Monitor) Run(ctx context.Context, fn func(ctx context.Context, c *Client) error) error {
	dialTimeout := cmpOr(m.DialTimeout, 5*time.Second)
	minBackoff := cmpOr(m.MinBackoff, 100*time.Millisecond)
	maxBackoff := max(cmpOr(m.MaxBackoff, 5*time.Second), minBackoff)
	backoff := minBackoff
	wait := func() error {
		t := time.NewTimer(backoff)
		defer t.Stop()
		select {
		case <-t.C:
			backoff = min(2*backoff, maxBackoff)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for {
		dctx, cancel := context.WithTimeout(ctx, dialTimeout)
		c, err := Dial(dctx, m.Path)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if m.Retry != nil && !m.Retry(err) {
				return err
			}
			if err := wait(); err != nil {
				return err
			}
			continue
		}
		start := time.Now()
		stop := context.AfterFunc(ctx, func() { c.Close() })
		err = fn(ctx, c)
		stop()
		c.Close()
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// A connection that lasted resets the backoff; one that keeps
		// ending at once (fn failing early) is not redialed in a spin.
		if time.Since(start) > maxBackoff {
			backoff = minBackoff
		}
		if err := wait(); err != nil {
			return err
		}
	}
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
