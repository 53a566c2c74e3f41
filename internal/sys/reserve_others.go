//go:build !linux

package sys

import (
	"errors"
	"fmt"
)

// A Reservation is a port held host-wide by this process. Reservations exist
// only on Linux.
type Reservation struct{}

// ReservePort reserves a port host-wide. On this system it returns an error
// wrapping errors.ErrUnsupported.
func ReservePort(etherType, port uint16) (*Reservation, error) {
	return nil, fmt.Errorf("sys: port reservation: %w", errors.ErrUnsupported)
}

// ReserveDatagramPort reserves a datagram port host-wide. On this system it
// returns an error wrapping errors.ErrUnsupported.
func ReserveDatagramPort(etherType, port uint16) (*Reservation, error) {
	return nil, fmt.Errorf("sys: port reservation: %w", errors.ErrUnsupported)
}

// ReserveName reserves a node name host-wide. On this system it returns an
// error wrapping errors.ErrUnsupported.
func ReserveName(etherType uint16, name string) (*Reservation, error) {
	return nil, fmt.Errorf("sys: name reservation: %w", errors.ErrUnsupported)
}

// Close releases the reservation.
func (r *Reservation) Close() error { return nil }

// PortOwned reports whether some process holds port of etherType. On this
// system reservations do not exist, and it reports false.
func PortOwned(etherType, port uint16) bool { return false }
