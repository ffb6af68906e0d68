package otelstoreexporter

// The only file that touches cgo: every call into the Rust core goes through a Go-typed wrapper
// here, so the rest of the package deals in []byte, uint64 and error.

/*
#cgo CFLAGS: -I${SRCDIR}/../rust/core/include
#cgo LDFLAGS: ${SRCDIR}/../target/release/libotelstore.a -lm -ldl -lpthread
#include <otelstore.h>
*/
import "C"

import (
	"fmt"
	"time"
	"unsafe"
)

// status is an OtelstoreStatus, mirrored as Go constants so tests and callers need no cgo.
type status int

const (
	statusOK              status = C.OTELSTORE_STATUS_OK
	statusInvalidConfig   status = C.OTELSTORE_STATUS_INVALID_CONFIG
	statusPermanent       status = C.OTELSTORE_STATUS_PERMANENT
	statusRetryable       status = C.OTELSTORE_STATUS_RETRYABLE
	statusInvalidArgument status = C.OTELSTORE_STATUS_INVALID_ARGUMENT
	statusInternal        status = C.OTELSTORE_STATUS_INTERNAL
)

// coreError is a failed core call. Its text is the core's message verbatim: the core already names
// the field and value, and keeps secrets such as the DSN's password out of it.
type coreError struct {
	status  status
	message string
}

func (e *coreError) Error() string {
	return e.message
}

// result turns a core status and the message the core may have allocated into an error, freeing the
// message in every case.
func result(st status, message *C.char) error {
	text := takeMessage(message)
	if st == statusOK {
		return nil
	}
	if text == "" {
		text = fmt.Sprintf("otelstore core returned status %d without a message", st)
	}
	return &coreError{status: st, message: text}
}

func takeMessage(message *C.char) string {
	if message == nil {
		return ""
	}
	defer C.otelstore_message_free(message)
	return C.GoString(message)
}

// bytesArg passes b to C without copying; cgo pins it for the duration of the call, and the core
// keeps no reference after returning.
func bytesArg(b []byte) (*C.uint8_t, C.size_t) {
	if len(b) == 0 {
		return nil, 0
	}
	return (*C.uint8_t)(unsafe.Pointer(&b[0])), C.size_t(len(b))
}

func coreDefaults() ([]byte, error) {
	var json *C.char
	st := status(C.otelstore_config_defaults(&json))
	if st != statusOK {
		takeMessage(json)
		return nil, &coreError{status: st, message: fmt.Sprintf("otelstore core could not produce its default configuration (status %d)", st)}
	}
	return []byte(takeMessage(json)), nil
}

func coreValidate(configJSON []byte) error {
	var message *C.char
	data, size := bytesArg(configJSON)
	return result(status(C.otelstore_config_validate(data, size, &message)), message)
}

func coreNew(configJSON []byte) (uint64, error) {
	var message *C.char
	var handle C.uint64_t
	data, size := bytesArg(configJSON)
	if err := result(status(C.otelstore_exporter_new(data, size, &handle, &message)), message); err != nil {
		return 0, err
	}
	return uint64(handle), nil
}

// signal is an OtelstoreSignal: which OTLP export request a coreExport call carries.
type signal uint32

const (
	signalTraces  signal = C.OTELSTORE_SIGNAL_TRACES
	signalLogs    signal = C.OTELSTORE_SIGNAL_LOGS
	signalMetrics signal = C.OTELSTORE_SIGNAL_METRICS
)

func (s signal) String() string {
	switch s {
	case signalTraces:
		return "traces"
	case signalLogs:
		return "logs"
	case signalMetrics:
		return "metrics"
	}
	return fmt.Sprintf("signal %d", uint32(s))
}

// coreExport writes one OTLP export request of the signal (an ExportTraceServiceRequest,
// ExportLogsServiceRequest or ExportMetricsServiceRequest); it returns once the data is committed,
// or with the core's last error when timeout (0: none) runs out first.
func coreExport(handle uint64, sig signal, otlp []byte, timeout time.Duration) error {
	var message *C.char
	data, size := bytesArg(otlp)
	return result(status(C.otelstore_exporter_export(C.uint64_t(handle), C.uint32_t(sig), data, size, C.uint64_t(timeout.Milliseconds()), &message)), message)
}

// coreDrain returns the core's telemetry since the previous call, as JSON (see telemetry.go).
func coreDrain(handle uint64) ([]byte, error) {
	var json *C.char
	st := status(C.otelstore_exporter_drain(C.uint64_t(handle), &json))
	if st != statusOK {
		takeMessage(json)
		return nil, &coreError{status: st, message: fmt.Sprintf("otelstore core could not report its telemetry (status %d)", st)}
	}
	return []byte(takeMessage(json)), nil
}

func coreShutdown(handle uint64, timeout time.Duration) error {
	var message *C.char
	return result(status(C.otelstore_exporter_shutdown(C.uint64_t(handle), C.uint64_t(timeout.Milliseconds()), &message)), message)
}

func coreFree(handle uint64) error {
	return result(status(C.otelstore_exporter_free(C.uint64_t(handle))), nil)
}
