package event

import (
	"errors"
	"fmt"
)

// Initial values for a store's poll.initial: what the first poll of a chatbot does with
// the records already in the API. Every store backend reads them with InitialEmits.
const (
	InitialSkip = "skip" // the first poll of a chatbot marks its records seen, sends nothing
	InitialEmit = "emit" // the first poll of a chatbot sends its records like any new ones
)

// InitialEmits reads a store's initial setting: whether the first poll of a chatbot
// sends its records. "" is InitialSkip; any other value is an error that quotes it.
func InitialEmits(initial string) (bool, error) {
	switch initial {
	case "", InitialSkip:
		return false, nil
	case InitialEmit:
		return true, nil
	}
	return false, fmt.Errorf("initial %q is neither %q nor %q", initial, InitialSkip, InitialEmit)
}

// CheckMove is the rule every store's MovePending(from, to) applies first: two
// different forwarder names.
func CheckMove(from, to string) error {
	if from == "" || to == "" || from == to {
		return errors.New("want two different forwarder names")
	}
	return nil
}
