package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
)

// Commands that change a running machine's devices: QOM properties (a
// virtio-mem device's requested size), memory devices, block nodes and
// hot-plugged devices (QAPI qom.json, machine.json, block-core.json,
// qdev.json of QEMU 7.2).

// Events of device changes.
const (
	// EventDeviceDeleted: a device was unplugged (the guest released it);
	// data: DeviceDeleted.
	EventDeviceDeleted = "DEVICE_DELETED"
	// EventMemoryDeviceSizeChange: a virtio-mem device's plugged size
	// changed; data: {"id", "size", "qom-path"}.
	EventMemoryDeviceSizeChange = "MEMORY_DEVICE_SIZE_CHANGE"
)

// QOMGet reads property of the object at path (qom-get) into result: a
// path is absolute ("/machine/peripheral/vmem0") or, for a device with an
// id, the id alone ("vmem0").
func (c *Client) QOMGet(ctx context.Context, path, property string, result any) error {
	return c.Execute(ctx, "qom-get", map[string]string{"path": path, "property": property}, result)
}

// QOMSet sets property of the object at path to value (qom-set).
func (c *Client) QOMSet(ctx context.Context, path, property string, value any) error {
	return c.Execute(ctx, "qom-set", map[string]any{"path": path, "property": property, "value": value}, nil)
}

// ObjectProperty is one property of a QOM object (qom-list).
type ObjectProperty struct {
	Name string `json:"name"`
	// Type is the property's type: "string", "int", or for a child
	// object "child<TYPE>" ("child<pcie-root-port>").
	Type string `json:"type"`
}

// QOMList lists the properties of the object at path, its children
// included (qom-list). The devices given an id on the command line or by
// device_add are the children of "/machine/peripheral".
func (c *Client) QOMList(ctx context.Context, path string) ([]ObjectProperty, error) {
	var props []ObjectProperty
	err := c.Execute(ctx, "qom-list", map[string]string{"path": path}, &props)
	return props, err
}

// MemorySizeSummary is the reply to query-memory-size-summary, in bytes.
type MemorySizeSummary struct {
	// BaseMemory is the memory the machine started with (-m).
	BaseMemory int64 `json:"base-memory"`
	// PluggedMemory is the memory plugged since, through memory devices
	// (DIMMs, virtio-mem).
	PluggedMemory int64 `json:"plugged-memory"`
}

// QueryMemorySizeSummary returns the machine's base and plugged memory
// (query-memory-size-summary).
func (c *Client) QueryMemorySizeSummary(ctx context.Context) (MemorySizeSummary, error) {
	var s MemorySizeSummary
	err := c.Execute(ctx, "query-memory-size-summary", nil, &s)
	return s, err
}

// VirtioMEMDevice is a virtio-mem device as query-memory-devices describes
// it; sizes in bytes.
type VirtioMEMDevice struct {
	ID string `json:"id"`
	// Memdev is the QOM path of its memory backend.
	Memdev string `json:"memdev"`
	// Memaddr is where its region starts in the guest's physical memory.
	Memaddr uint64 `json:"memaddr"`
	// BlockSize is the unit the guest plugs and unplugs memory in.
	BlockSize int64 `json:"block-size"`
	// Size is what the guest has plugged, RequestedSize what it was asked
	// to plug, MaxSize the region's size (the backend's).
	Size          int64 `json:"size"`
	RequestedSize int64 `json:"requested-size"`
	MaxSize       int64 `json:"max-size"`
	Node          int   `json:"node"`
}

// MemoryDevice is one memory device (query-memory-devices).
type MemoryDevice struct {
	// Type is "dimm", "nvdimm", "virtio-pmem", "virtio-mem" or
	// "sgx-epc".
	Type string `json:"type"`
	// Data describes the device; decode it by Type, or use VirtioMEM.
	Data json.RawMessage `json:"data"`
}

// VirtioMEM returns the device's description if it is a virtio-mem device.
func (d MemoryDevice) VirtioMEM() (VirtioMEMDevice, bool) {
	var v VirtioMEMDevice
	if d.Type != "virtio-mem" || json.Unmarshal(d.Data, &v) != nil {
		return VirtioMEMDevice{}, false
	}
	return v, true
}

// QueryMemoryDevices lists the memory devices (query-memory-devices).
func (c *Client) QueryMemoryDevices(ctx context.Context) ([]MemoryDevice, error) {
	var devs []MemoryDevice
	err := c.Execute(ctx, "query-memory-devices", nil, &devs)
	return devs, err
}

// VirtioMEM returns the virtio-mem device with the given id
// (query-memory-devices); an error when there is none.
func (c *Client) VirtioMEM(ctx context.Context, id string) (VirtioMEMDevice, error) {
	devs, err := c.QueryMemoryDevices(ctx)
	if err != nil {
		return VirtioMEMDevice{}, err
	}
	for _, d := range devs {
		if v, ok := d.VirtioMEM(); ok && v.ID == id {
			return v, nil
		}
	}
	return VirtioMEMDevice{}, fmt.Errorf("qmp: no virtio-mem device %q: %w", id, ErrNoDevice)
}

// ErrNoDevice is wrapped by the errors about a device or block node that
// does not exist.
var ErrNoDevice = errors.New("no such device")

// BlockdevOptions are the arguments of blockdev-add for the nodes vmtui
// makes: a protocol node (Driver "file", with Filename) or a format node
// (Driver "qcow2", "raw", "qcow", with File naming the protocol node).
type BlockdevOptions struct {
	Driver   string `json:"driver"`
	NodeName string `json:"node-name"`
	// Filename is the image file of a "file" node.
	Filename string `json:"filename,omitempty"`
	// File is the node-name of the node a format node reads.
	File     string `json:"file,omitempty"`
	ReadOnly bool   `json:"read-only,omitempty"`
	// Discard is "unmap" to pass a guest's discards down, "" to ignore
	// them.
	Discard string `json:"discard,omitempty"`
}

// BlockdevAdd adds a block node (blockdev-add). Opening an image file
// takes QEMU's locks on it: an image another QEMU writes is refused with a
// GenericError saying `Failed to get "write" lock`.
func (c *Client) BlockdevAdd(ctx context.Context, opts BlockdevOptions) error {
	if opts.Driver == "" || opts.NodeName == "" {
		return errors.New("qmp: blockdev-add: driver and node-name are required")
	}
	return c.Execute(ctx, "blockdev-add", opts, nil)
}

// BlockdevDel removes a block node that no device and no other node uses
// (blockdev-del), closing its file.
func (c *Client) BlockdevDel(ctx context.Context, nodeName string) error {
	return c.Execute(ctx, "blockdev-del", map[string]string{"node-name": nodeName}, nil)
}

// DeviceAdd plugs a device (device_add): driver ("virtio-blk-pci"), its
// id, the bus to plug it into ("" lets QEMU choose) and its other
// properties ("drive": a node-name, "serial": ...).
func (c *Client) DeviceAdd(ctx context.Context, driver, id, bus string, props map[string]any) error {
	args := make(map[string]any, len(props)+3)
	maps.Copy(args, props)
	args["driver"] = driver
	if id != "" {
		args["id"] = id
	}
	if bus != "" {
		args["bus"] = bus
	}
	return c.Execute(ctx, "device_add", args, nil)
}

// DeviceDel asks for a device to be unplugged (device_del). It returns at
// once: a PCI device goes only once the guest has released it, which QEMU
// reports with a DEVICE_DELETED event. [Client.DeviceDelWait] waits for it.
func (c *Client) DeviceDel(ctx context.Context, id string) error {
	return c.Execute(ctx, "device_del", map[string]string{"id": id}, nil)
}

// DeviceDeleted is the data of a DEVICE_DELETED event.
type DeviceDeleted struct {
	// Device is the device's id; empty for the device's parts (QEMU
	// sends an event for its virtio backend too).
	Device string `json:"device"`
	Path   string `json:"path"`
}

// DeviceDelWait unplugs device id (device_del) and waits until QEMU reports
// it gone (DEVICE_DELETED with its id), or ctx ends: a guest may take its
// time, or never release the device; the request stays pending then.
func (c *Client) DeviceDelWait(ctx context.Context, id string) error {
	// Subscribed first: the event may come before the reply.
	sub := c.Subscribe(16, EventDeviceDeleted)
	defer sub.Close()
	if err := c.DeviceDel(ctx, id); err != nil {
		return err
	}
	for {
		ev, err := sub.Wait(ctx, EventDeviceDeleted)
		if err != nil {
			return fmt.Errorf("qmp: device_del %s: %w", id, unwrapPrefix(err))
		}
		var d DeviceDeleted
		if ev.DecodeData(&d) == nil && d.Device == id {
			return nil
		}
	}
}

// BlockInfo is a block device backend (query-block).
type BlockInfo struct {
	// Device is the legacy drive name, "" for nodes made by -blockdev
	// and blockdev-add.
	Device string `json:"device"`
	// QDev is the QOM path (or id) of the device it is attached to.
	QDev     string           `json:"qdev"`
	Locked   bool             `json:"locked"`
	Inserted *BlockDeviceInfo `json:"inserted"`
}

// BlockDeviceInfo is a block node (query-named-block-nodes, and the
// inserted medium of query-block).
type BlockDeviceInfo struct {
	NodeName string `json:"node-name"`
	// File is the image's file name.
	File string `json:"file"`
	// Drv is the format driver: "qcow2", "raw", "file", ...
	Drv string `json:"drv"`
	RO  bool   `json:"ro"`
}

// QueryBlock lists the block backends and the devices using them
// (query-block).
func (c *Client) QueryBlock(ctx context.Context) ([]BlockInfo, error) {
	var list []BlockInfo
	err := c.Execute(ctx, "query-block", nil, &list)
	return list, err
}

// QueryNamedBlockNodes lists every block node, with its node-name
// (query-named-block-nodes, flat: backing images are listed as nodes of
// their own, not nested).
func (c *Client) QueryNamedBlockNodes(ctx context.Context) ([]BlockDeviceInfo, error) {
	var list []BlockDeviceInfo
	err := c.Execute(ctx, "query-named-block-nodes", map[string]bool{"flat": true}, &list)
	return list, err
}
