package config

import (
	"reflect"
	"testing"
)

// FuzzDecode checks that no file makes decode panic, and that every
// definition decode accepts is written back by encode to a file that decodes
// to the same definition.
func FuzzDecode(f *testing.F) {
	f.Add([]byte("id = 1\nkernel = '/k'\n"))
	f.Add([]byte("id = 1\nmemroy = '1G'\nkernel = '/k'\n"))
	f.Add([]byte(`id = 7
name = "web"
memory = "1536M"
cpus = 4
kernel = "/boot/vmlinuz"
initrd = "/boot/initrd"
append = "console=ttyS0\tquiet"
cdrom = "/iso/x.iso"
boot = "cdrom"
accel = "kvm"
machine = "q35"
extra_args = ["-device", "virtio-rng-pci", "a\nb"]
[[disks]]
path = "/a, b.qcow2"
format = "qcow2"
[[networks]]
hostfwd = ["tcp::2222-:22"]
[[networks]]
type = "bridge"
bridge = "br0"
mac = "52:54:00:12:34:56"
`))
	f.Fuzz(func(t *testing.T, data []byte) {
		vm := &VM{Name: "web", File: "/c/vms/web.toml"}
		if err := Decode(vm, data); err != nil {
			return
		}
		out, err := Encode(vm)
		if err != nil {
			t.Fatalf("encode of a decoded definition: %v", err)
		}
		again := &VM{Name: "web", File: "/c/vms/web.toml"}
		if err := Decode(again, out); err != nil {
			t.Fatalf("decode of an encoded definition: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(vm, again) {
			t.Fatalf("round trip:\ngot  %+v\nwant %+v\n%s", again, vm, out)
		}
	})
}
