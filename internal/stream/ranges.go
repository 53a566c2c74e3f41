package stream

import "slices"

// seqRange is the half-open range [lo, hi) of byte offsets or packet numbers.
type seqRange struct{ lo, hi uint64 }

// rangeSet is a set of uint64 values held as sorted, disjoint, non-adjacent
// half-open ranges. Appending at the top, the common case for packet numbers
// and in-order data, costs O(1); other updates a binary search and a copy.
// Once its slice has grown it allocates nothing.
type rangeSet struct {
	r []seqRange
}

func (s *rangeSet) empty() bool { return len(s.r) == 0 }

func (s *rangeSet) clear() { s.r = s.r[:0] }

// first returns the lowest range; the set must not be empty.
func (s *rangeSet) first() seqRange { return s.r[0] }

// last returns the highest range; the set must not be empty.
func (s *rangeSet) last() seqRange { return s.r[len(s.r)-1] }

// search returns the index of the first range whose hi is >= v.
func (s *rangeSet) search(v uint64) int {
	lo, hi := 0, len(s.r)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s.r[m].hi < v {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// add inserts [lo, hi), merging with ranges it overlaps or touches.
func (s *rangeSet) add(lo, hi uint64) {
	if lo >= hi {
		return
	}
	n := len(s.r)
	if n == 0 || s.r[n-1].hi < lo {
		s.r = append(s.r, seqRange{lo, hi})
		return
	}
	if t := &s.r[n-1]; t.lo <= lo {
		t.hi = max(t.hi, hi)
		return
	}
	i := s.search(lo) // first range ending at or after lo: touches or follows
	j := i
	for j < n && s.r[j].lo <= hi {
		j++
	}
	if i == j {
		s.r = slices.Insert(s.r, i, seqRange{lo, hi})
		return
	}
	s.r[i] = seqRange{min(lo, s.r[i].lo), max(hi, s.r[j-1].hi)}
	s.r = slices.Delete(s.r, i+1, j)
}

// wouldSplit reports whether adding [lo, hi) would create a new range
// rather than grow or fill existing ones.
func (s *rangeSet) wouldSplit(lo, hi uint64) bool {
	i := s.search(lo)
	return i == len(s.r) || s.r[i].lo > hi
}

// remove deletes [lo, hi) from the set.
func (s *rangeSet) remove(lo, hi uint64) {
	if lo >= hi || len(s.r) == 0 {
		return
	}
	i := s.search(lo + 1) // first range ending after lo
	j := i
	for j < len(s.r) && s.r[j].lo < hi {
		j++
	}
	if i == j {
		return
	}
	left := s.r[i].lo < lo
	right := s.r[j-1].hi > hi
	l := seqRange{s.r[i].lo, lo}
	r := seqRange{hi, s.r[j-1].hi}
	switch {
	case left && right:
		if i == j-1 {
			s.r[i] = l
			s.r = slices.Insert(s.r, i+1, r)
			return
		}
		s.r[i], s.r[j-1] = l, r
		s.r = slices.Delete(s.r, i+1, j-1)
	case left:
		s.r[i] = l
		s.r = slices.Delete(s.r, i+1, j)
	case right:
		s.r[j-1] = r
		s.r = slices.Delete(s.r, i, j-1)
	default:
		s.r = slices.Delete(s.r, i, j)
	}
}

// removeBelow deletes every value below v.
func (s *rangeSet) removeBelow(v uint64) {
	i := 0
	for i < len(s.r) && s.r[i].hi <= v {
		i++
	}
	if i > 0 {
		s.r = slices.Delete(s.r, 0, i)
	}
	if len(s.r) > 0 && s.r[0].lo < v {
		s.r[0].lo = v
	}
}

// contains reports whether v is in the set.
func (s *rangeSet) contains(v uint64) bool {
	i := s.search(v + 1)
	return i < len(s.r) && s.r[i].lo <= v
}

// firstGap returns the first part of [lo, hi) that is not in the set, or an
// empty range if all of it is.
func (s *rangeSet) firstGap(lo, hi uint64) seqRange {
	i := s.search(lo + 1)
	for ; i < len(s.r) && lo < hi; i++ {
		r := s.r[i]
		if r.lo > lo {
			return seqRange{lo, min(hi, r.lo)}
		}
		lo = max(lo, r.hi)
	}
	if lo >= hi {
		return seqRange{}
	}
	return seqRange{lo, hi}
}
