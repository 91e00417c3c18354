package vm

import (
	"reflect"
	"testing"
)

// TestHotplugPorts: a q35 machine (the default) gets its spare root ports
// after every other device, each its own chassis; pc and other machines,
// whose root bus takes hotplugged devices, get none; nor does a Spec
// without slots (the golden command lines above).
func TestHotplugPorts(t *testing.T) {
	ports := []string{
		"-device", "pcie-root-port,id=hp0,bus=pcie.0,chassis=1",
		"-device", "pcie-root-port,id=hp1,bus=pcie.0,chassis=2",
	}
	for _, tc := range []struct {
		machine string
		n       int
		want    []string
	}{
		{"", 2, ports},
		{"q35", 2, ports},
		{"pc-q35-7.2", 2, ports},
		{"pc", 2, nil},
		{"pc-i440fx-7.2", 2, nil},
		{"microvm", 2, nil},
		{"q35", 0, nil},
	} {
		got, err := hotplugPortsDev{machine: tc.machine, n: tc.n}.args()
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("machine %q, %d slots: got %q, %v, want %q", tc.machine, tc.n, got, err, tc.want)
		}
	}
	s := Spec{Name: "web", Memory: 512 << 20, CPUs: 1, QMPFD: 3, HotplugSlots: HotplugSlots, Paused: true}
	argv, err := Cmdline(s)
	if err != nil {
		t.Fatal(err)
	}
	// Last but -S: the devices of the definition keep their slots.
	if n := len(argv); n < 3 || argv[n-3] != "-device" || argv[n-2] != "pcie-root-port,id=hp3,bus=pcie.0,chassis=4" || argv[n-1] != "-S" {
		t.Errorf("Cmdline with %d slots: %q", HotplugSlots, argv)
	}
}

// TestHasVirtioMem: the status asks QEMU for the memory it has now only
// when its command line has the virtio-mem device.
func TestHasVirtioMem(t *testing.T) {
	argv, err := Cmdline(Spec{Name: "web", Memory: 256 << 20, MaxMemory: 1 << 30, CPUs: 1, QMPFD: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !hasVirtioMem(argv) {
		t.Errorf("no virtio-mem device found in %q", argv)
	}
	if hasVirtioMem([]string{"qemu-system-x86_64", "-m", "256M", "-device", "virtio-mem-pci,id=other,memdev=x"}) {
		t.Errorf("a virtio-mem device of another id taken for vmtui's")
	}
}
