// Package qmp is a client for the QEMU Machine Protocol, the JSON monitor a
// QEMU process serves on the socket given with -qmp.
//
// A [Client] is made with [Dial] (a unix socket path) or [New] (an existing
// connection: a pre-dialed listener, or one end of a [net.Pipe] in tests).
// Both read QEMU's greeting (its version is kept, see [Client.Version]),
// negotiate capabilities, and then serve:
//
//   - One goroutine owns reading the socket with a [encoding/json.Decoder]:
//     there is no line-length limit, so replies far above 64 KiB (a large
//     query-qmp-schema or query-block) are fine, up to [MaxMessageSize].
//   - Every command carries a unique, monotonically increasing id and its own
//     reply channel; replies are matched by id, which QEMU echoes verbatim. A
//     reply that arrives after its caller gave up (context cancelled) is
//     dropped without holding anything up.
//   - Events are fanned out to [Subscription]s on buffered channels. A full
//     channel drops its oldest event rather than blocking the reader, so a
//     slow or absent consumer never stalls commands. An event that QEMU sends
//     before a reply is delivered before that reply: after [Client.Stop]
//     returns, the STOP event is already in every subscription.
//   - Disconnection is visible through [Client.Done] and [Client.Err]; calls
//     that were waiting fail with an error wrapping [io.ErrUnexpectedEOF]
//     (the socket dropped) or [ErrClosed] (the client was closed, or QEMU
//     closed the monitor after quit, which [Client.Quit] reports as success).
//
// [Client.Execute] runs any command; a QMP error reply becomes an [*Error]
// that keeps QEMU's error class. Typed helpers cover what a VM manager needs:
// [Client.QueryStatus], [Client.Stop], [Client.Cont], [Client.SystemPowerdown],
// [Client.SystemReset], [Client.Quit], [Client.QueryChardev] (with
// [Chardev.PTY] for a serial console's path), [Client.QueryCPUsFast],
// [Client.QueryBalloon] and [Client.HumanMonitorCommand].
//
// # One client per socket
//
// QEMU 7.2 serves one client per -qmp socket. A second client's connect
// succeeds, but it gets no greeting until the first one disconnects; [Dial]
// and [New] wait for the greeting only as long as their context allows and
// then fail with an error wrapping [ErrBusy]. A process should therefore hold
// a monitor only briefly (dial, query, close), or give its long-lived watcher
// a QMP socket of its own.
//
// # Reconnecting
//
// Events that fire while no client is connected are lost. A watcher that
// must survive a dropped socket redials and then re-queries the state it
// cares about; [Monitor] does the redialing with a backoff. The pattern, in
// each connection: subscribe first, query second, then follow events, so that
// nothing falls between the query and the subscription:
//
//	m := &qmp.Monitor{Path: sock}
//	err := m.Run(ctx, func(ctx context.Context, c *qmp.Client) error {
//		sub := c.Subscribe(16)
//		defer sub.Close()
//		st, err := c.QueryStatus(ctx)
//		if err != nil {
//			return nil // dropped meanwhile: redial
//		}
//		show(st)
//		for ev := range sub.C {
//			show(ev)
//		}
//		return nil // sub.C closes when the socket drops: redial
//	})
//
// # Security
//
// The client trusts QEMU no more than it must. Whatever a peer sends, the
// reader neither panics nor holds more than [MaxMessageSize] bytes of one
// message: a longer message ends the connection. A line that is not JSON
// is skipped, as is a well-formed message of an unexpected shape, and a
// reply whose id matches no call in progress. FuzzReader (reader_test.go)
// checks this from sessions recorded with QEMU 7.2.
//
// Package [github.com/vmtui/vmtui/vm/qmp/qmptest] serves a scripted fake QEMU for tests.
package qmp
