package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Conventions the tools share, so that one learnt is all learnt:
//
//   - flags may come before or after the operands (myproto ping nodeb -c 3),
//     as the GNU tools allow; "--" ends them;
//   - -h, -help and --help print the command's usage on standard output and
//     exit 0; a mistake prints it on standard error and exits 2;
//   - times are seconds, fractions allowed (-i 0.2), or Go durations (-i 200ms);
//   - -J prints the result as one JSON document on standard output;
//   - errors go to standard error as "myproto: what: why", exit status 1.

// newFlags returns an empty flag set for the subcommand name; parseFlags
// does the reporting.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses args with fs, flags and operands in any order, and
// returns the operands. When the command must stop here it returns ok false
// and the exit status: 0 after printing usage for -h, 2 after reporting a
// mistake.
func parseFlags(fs *flag.FlagSet, usage string, args []string, stdout, stderr io.Writer) (operands []string, code int, ok bool) {
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return nil, 0, false
		}
		if err != nil {
			return nil, usageError(stderr, usage, "myproto %s: %v", fs.Name(), err), false
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(operands, rest...), 0, true
		}
		if len(rest) == 0 {
			return operands, 0, true
		}
		operands, args = append(operands, rest[0]), rest[1:]
	}
}

// usageError reports a command-line mistake with the command's usage and
// returns the exit status for one.
func usageError(stderr io.Writer, usage, format string, args ...any) int {
	fmt.Fprintf(stderr, format+"\n\n%s", append(args, usage)...)
	return 2
}

// secondsValue is a flag.Value for a time: seconds ("0.2") or a Go
// duration ("200ms").
type secondsValue struct{ d *time.Duration }

// secondsFlag defines a time flag with a default.
func secondsFlag(fs *flag.FlagSet, name string, def time.Duration, usage string) *time.Duration {
	d := def
	fs.Var(secondsValue{&d}, name, usage)
	return &d
}

func (v secondsValue) String() string {
	if v.d == nil {
		return ""
	}
	return strconv.FormatFloat(v.d.Seconds(), 'g', -1, 64)
}

func (v secondsValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || f > 1e9 {
			return fmt.Errorf("%q is not a time: want seconds (0.2) or a duration (200ms)", s)
		}
		d = time.Duration(f * float64(time.Second))
	}
	if d < 0 {
		return fmt.Errorf("%q is negative", s)
	}
	*v.d = d
	return nil
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// fail reports err from what on stderr, as nc and ping do, and returns
// exit status 1.
func fail(stderr io.Writer, what string, err error) int {
	fmt.Fprintf(stderr, "myproto: %s: %s\n", what, errText(err))
	// The library's error says what to do; an older one may not.
	if errors.Is(err, syscall.EPERM) && !strings.Contains(err.Error(), "CAP_NET_RAW") {
		fmt.Fprintln(stderr, "myproto: packet sockets need CAP_NET_RAW: run as root, "+
			"or give the binary the capability (setcap cap_net_raw+ep), or run it in a user and network namespace of yours (unshare -rn)")
	}
	return 1
}

// errText is err without the layers a user does not need: the operation
// and addresses the caller prints itself, and the system call's name.
func errText(err error) string {
	if oe, ok := errors.AsType[*net.OpError](err); ok {
		err = oe.Err
	}
	if se, ok := errors.AsType[*os.SyscallError](err); ok {
		err = se.Err
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "timed out"
	}
	return strings.TrimPrefix(err.Error(), "myproto: ")
}

// ms is d in milliseconds to the microsecond, for JSON and ping's lines.
func ms(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Microsecond)) / 1000 }
