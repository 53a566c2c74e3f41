package sys_test

import (
	"testing"

	"github.com/myproto/myproto/internal/testenv"
)

// TestMain runs the tests in a private network namespace, re-executing the
// binary in a new user and network namespace when not root, so the tests
// that make namespaces and links run for everyone and touch nothing of the
// host's.
func TestMain(m *testing.M) { testenv.Main(m) }
