// Cooperative cancellation for long loops in core/.
//
// Every loop that evaluates the network (sampling steps, Jacobian chunks,
// eigen-solves) calls StopCheck between units of work. The server binds it to
// a job's cancellation flag and the client's deadline; returning a non-OK
// status (CANCELLED, DEADLINE_EXCEEDED) makes the loop return that status at
// once, discarding only the unit of work in progress.
#ifndef MEMAUDIT_CORE_BASE_STOP_H_
#define MEMAUDIT_CORE_BASE_STOP_H_

#include <functional>

#include "absl/status/status.h"

namespace memaudit {

// Returns OK to continue, or the status to stop with. Must be cheap and
// thread-safe; an empty function never stops.
using StopCheck = std::function<absl::Status()>;

inline absl::Status CheckStop(const StopCheck& stop) { return stop ? stop() : absl::OkStatus(); }

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_BASE_STOP_H_
