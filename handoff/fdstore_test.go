package handoff

import (
	"testing"

	"github.com/echod/echod/systemd"
)

func TestStoreName(t *testing.T) {
	seen := map[string]string{}
	for _, in := range []string{
		"127.0.0.1:7007", ":7007", "[::1]:7007", "tcp4:127.0.0.1:1", "tcp6:[::]:1",
		"/run/echod.sock", "unix:/tmp/a_b.sock", "unix:/tmp/a:b.sock", "h_st:1", "h:st:1",
	} {
		spec, err := ParseSpec(in)
		if err != nil {
			continue // "h:st:1" is not an address; fine
		}
		name := StoreName(spec)
		if err := systemd.CheckFDName(name); err != nil {
			t.Errorf("StoreName(%s) = %q: %v", in, name, err)
		}
		if !isStoreName(name) {
			t.Errorf("StoreName(%s) = %q lacks the prefix", in, name)
		}
		if other, dup := seen[name]; dup {
			t.Errorf("StoreName(%s) = StoreName(%s) = %q", in, other, name)
		}
		seen[name] = in
	}
}

// FuzzStoreName: the fd store name of every valid address is a valid
// FDNAME= and names no other address.
func FuzzStoreName(f *testing.F) {
	f.Add("127.0.0.1:7007", "unix:/a_b")
	f.Add("[::1]:1", "tcp6:[::1]:1")
	f.Add("unix:/a:b", "unix:/a_b")
	f.Fuzz(func(t *testing.T, a, b string) {
		sa, errA := ParseSpec(a)
		sb, errB := ParseSpec(b)
		if errA != nil || errB != nil {
			return
		}
		na, nb := StoreName(sa), StoreName(sb)
		if len(sa.String()) < 200 {
			if err := systemd.CheckFDName(na); err != nil {
				t.Fatalf("StoreName(%v) = %q: %v", sa, na, err)
			}
		}
		if sa != sb && na == nb {
			t.Fatalf("%v and %v share the store name %q", sa, sb, na)
		}
	})
}
