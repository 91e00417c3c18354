package qmp_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vmtui/vmtui/vm/qmp"
	"github.com/vmtui/vmtui/vm/qmp/qmptest"
)

// TestDeviceCommands: each typed command sends QEMU 7.2's arguments and
// decodes its replies (taken from a QEMU 7.2 q35 guest with a virtio-mem
// device and a disk on a pcie-root-port).
func TestDeviceCommands(t *testing.T) {
	s := qmptest.NewServer()
	t.Cleanup(s.Close)
	s.On("qom-get").Args(map[string]string{"path": "vmem0", "property": "block-size"}).Return(2 << 20)
	s.On("qom-set").Args(map[string]any{"path": "vmem0", "property": "requested-size", "value": 256 << 20}).Return(nil)
	s.On("qom-list").Args(map[string]string{"path": "/machine/peripheral"}).Return([]map[string]string{
		{"name": "type", "type": "string"}, {"name": "hp1", "type": "child<pcie-root-port>"}, {"name": "hp0", "type": "child<pcie-root-port>"}})
	s.On("query-memory-size-summary").Return(map[string]int64{"base-memory": 256 << 20, "plugged-memory": 128 << 20})
	s.On("query-memory-devices").Return(json.RawMessage(`[{"type": "dimm", "data": {"id": "d0", "size": 1}},
		{"type": "virtio-mem", "data": {"memdev": "/objects/vmem0-mem", "memaddr": 4294967296, "block-size": 2097152,
		"size": 134217728, "node": 0, "max-size": 536870912, "requested-size": 268435456, "id": "vmem0"}}]`))
	s.On("blockdev-add").Args(map[string]any{"driver": "file", "node-name": "hot0-file", "filename": "/d/a,b.qcow2"}).Return(nil)
	s.On("blockdev-add").Args(map[string]any{"driver": "qcow2", "node-name": "hot0", "file": "hot0-file", "read-only": true}).Return(nil)
	s.On("device_add").Args(map[string]any{"driver": "virtio-blk-pci", "id": "hot0-dev", "bus": "hp0", "drive": "hot0", "serial": "hot0"}).Return(nil)
	s.On("device_add").Args(map[string]any{"driver": "virtio-blk-pci", "drive": "hot1"}).Error("GenericError", "Bus 'pcie.0' does not support hotplugging")
	s.On("blockdev-del").Args(map[string]string{"node-name": "hot0"}).Return(nil)
	s.On("query-block").Return(json.RawMessage(`[{"io-status": "ok", "device": "", "locked": false, "removable": false,
		"inserted": {"node-name": "hot0", "file": "/tmp/exp/disk.qcow2", "drv": "qcow2", "ro": false, "encrypted": false},
		"qdev": "/machine/peripheral/hot0-dev/virtio-backend", "type": "unknown"}]`))
	s.On("query-named-block-nodes").Args(map[string]bool{"flat": true}).Return(json.RawMessage(`[
		{"node-name": "hot0", "file": "/tmp/exp/disk.qcow2", "drv": "qcow2", "ro": false},
		{"node-name": "hot0-file", "file": "/tmp/exp/disk.qcow2", "drv": "file", "ro": false}]`))
	c := connect(t, s)
	ctx := testCtx(t, timeout)

	var bs int64
	if err := c.QOMGet(ctx, "vmem0", "block-size", &bs); err != nil || bs != 2<<20 {
		t.Errorf("QOMGet: got %d, %v, want %d", bs, err, 2<<20)
	}
	if err := c.QOMSet(ctx, "vmem0", "requested-size", 256<<20); err != nil {
		t.Errorf("QOMSet: %v", err)
	}
	props, err := c.QOMList(ctx, "/machine/peripheral")
	if err != nil || len(props) != 3 || props[1] != (qmp.ObjectProperty{Name: "hp1", Type: "child<pcie-root-port>"}) {
		t.Errorf("QOMList: got %+v, %v", props, err)
	}
	sum, err := c.QueryMemorySizeSummary(ctx)
	if err != nil || sum != (qmp.MemorySizeSummary{BaseMemory: 256 << 20, PluggedMemory: 128 << 20}) {
		t.Errorf("QueryMemorySizeSummary: got %+v, %v", sum, err)
	}
	devs, err := c.QueryMemoryDevices(ctx)
	if err != nil || len(devs) != 2 {
		t.Fatalf("QueryMemoryDevices: got %+v, %v", devs, err)
	}
	if _, ok := devs[0].VirtioMEM(); ok {
		t.Errorf("a dimm taken for a virtio-mem device")
	}
	want := qmp.VirtioMEMDevice{ID: "vmem0", Memdev: "/objects/vmem0-mem", Memaddr: 4 << 30, BlockSize: 2 << 20,
		Size: 128 << 20, RequestedSize: 256 << 20, MaxSize: 512 << 20}
	if v, err := c.VirtioMEM(ctx, "vmem0"); err != nil || v != want {
		t.Errorf("VirtioMEM(vmem0): got %+v, %v, want %+v", v, err, want)
	}
	if _, err := c.VirtioMEM(ctx, "vmem9"); !errors.Is(err, qmp.ErrNoDevice) {
		t.Errorf("VirtioMEM(vmem9): got %v, want ErrNoDevice", err)
	}
	if err := c.BlockdevAdd(ctx, qmp.BlockdevOptions{Driver: "file", NodeName: "hot0-file", Filename: "/d/a,b.qcow2"}); err != nil {
		t.Errorf("BlockdevAdd(file): %v", err)
	}
	if err := c.BlockdevAdd(ctx, qmp.BlockdevOptions{Driver: "qcow2", NodeName: "hot0", File: "hot0-file", ReadOnly: true}); err != nil {
		t.Errorf("BlockdevAdd(qcow2): %v", err)
	}
	if err := c.BlockdevAdd(ctx, qmp.BlockdevOptions{Driver: "qcow2"}); err == nil {
		t.Errorf("BlockdevAdd without a node-name: no error")
	}
	if err := c.DeviceAdd(ctx, "virtio-blk-pci", "hot0-dev", "hp0", map[string]any{"drive": "hot0", "serial": "hot0"}); err != nil {
		t.Errorf("DeviceAdd: %v", err)
	}
	err = c.DeviceAdd(ctx, "virtio-blk-pci", "", "", map[string]any{"drive": "hot1"})
	if qmp.ErrorClass(err) != qmp.ClassGenericError || !strings.Contains(err.Error(), "does not support hotplugging") {
		t.Errorf("DeviceAdd on pcie.0: got %v, want QEMU's GenericError", err)
	}
	if err := c.BlockdevDel(ctx, "hot0"); err != nil {
		t.Errorf("BlockdevDel: %v", err)
	}
	blocks, err := c.QueryBlock(ctx)
	if err != nil || len(blocks) != 1 || blocks[0].Inserted == nil || blocks[0].Inserted.NodeName != "hot0" ||
		blocks[0].QDev != "/machine/peripheral/hot0-dev/virtio-backend" {
		t.Errorf("QueryBlock: got %+v, %v", blocks, err)
	}
	nodes, err := c.QueryNamedBlockNodes(ctx)
	if err != nil || len(nodes) != 2 || nodes[1] != (qmp.BlockDeviceInfo{NodeName: "hot0-file", File: "/tmp/exp/disk.qcow2", Drv: "file"}) {
		t.Errorf("QueryNamedBlockNodes: got %+v, %v", nodes, err)
	}
	for _, cmd := range s.Commands() {
		if cmd.Execute == "device_add" && strings.Contains(string(cmd.Arguments), `"id"`) && strings.Contains(string(cmd.Arguments), "hot1") {
			t.Errorf("device_add without an id sent one: %s", cmd.Arguments)
		}
	}
}

// TestDeviceDelWait: DeviceDelWait returns on the DEVICE_DELETED event of
// its device, wherever it comes relative to the reply, and not on the
// events of other devices or of the device's parts.
func TestDeviceDelWait(t *testing.T) {
	other := map[string]string{"device": "hot1-dev", "path": "/machine/peripheral/hot1-dev"}
	backend := map[string]string{"path": "/machine/peripheral/hot0-dev/virtio-backend"}
	mine := map[string]string{"device": "hot0-dev", "path": "/machine/peripheral/hot0-dev"}
	for _, tc := range []struct {
		name  string
		setup func(r *qmptest.Rule)
		ctx   time.Duration
		want  string // "" for success, else a substring of the error
	}{
		{"event after the reply", func(r *qmptest.Rule) {
			r.Return(nil).Event(qmp.EventDeviceDeleted, other).Event(qmp.EventDeviceDeleted, backend).Event(qmp.EventDeviceDeleted, mine)
		}, timeout, ""},
		{"event before the reply", func(r *qmptest.Rule) {
			r.Event(qmp.EventDeviceDeleted, mine).Return(nil)
		}, timeout, ""},
		{"the guest keeps the device", func(r *qmptest.Rule) {
			r.Return(nil).Event(qmp.EventDeviceDeleted, backend)
		}, 200 * time.Millisecond, "context deadline exceeded"},
		{"no such device", func(r *qmptest.Rule) {
			r.Error("DeviceNotFound", "Device 'hot0-dev' not found")
		}, timeout, "Device 'hot0-dev' not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := qmptest.NewServer()
			t.Cleanup(s.Close)
			tc.setup(s.On("device_del").Args(map[string]string{"id": "hot0-dev"}))
			c := connect(t, s)
			ctx, cancel := context.WithTimeout(t.Context(), tc.ctx)
			defer cancel()
			err := c.DeviceDelWait(ctx, "hot0-dev")
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("DeviceDelWait: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("DeviceDelWait: got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
