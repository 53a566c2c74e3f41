package sys

import (
	"errors"
	"os/exec"
	"path/filepath"
)

// sbinDirs are where administration tools live, which a normal user's PATH
// often leaves out.
var sbinDirs = []string{"/usr/sbin", "/sbin", "/usr/local/sbin"}

// Tool returns the path of the program name (nft, tc, ip): the one on
// PATH, else the one in /usr/sbin, /sbin or /usr/local/sbin, so that tests
// find the tools a machine has even when run by a user whose PATH lacks
// those directories. The error wraps exec.ErrNotFound.
func Tool(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	for _, dir := range sbinDirs {
		if p, lerr := exec.LookPath(filepath.Join(dir, name)); lerr == nil {
			return p, nil
		}
	}
	if !errors.Is(err, exec.ErrNotFound) {
		return "", err
	}
	return "", &exec.Error{Name: name, Err: exec.ErrNotFound}
}
