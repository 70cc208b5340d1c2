// Package iperf3 reads the result of an `iperf3 --json` client run, for
// the benchmarks (bench/ and the Go benchmarks in test/).
package iperf3

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Received returns the bit/s the receiver got (the sum over the streams),
// or iperf3's own error.
func Received(jsonOut []byte) (float64, error) {
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(jsonOut, &r); err != nil {
		return 0, fmt.Errorf("iperf3 output: %w", err)
	}
	if r.Error != "" {
		return 0, errors.New(r.Error)
	}
	if r.End.SumReceived.BitsPerSecond == 0 {
		return 0, errors.New("iperf3: the receiver got nothing")
	}
	return r.End.SumReceived.BitsPerSecond, nil
}
