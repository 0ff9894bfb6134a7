package dialecttest

import "testing"

// runOutbox runs the outbox cases, one subtest per area of the contract
// (Migrate, Insert, Claim, Finish, Admin, Ack), each case on a database
// of its own.
func runOutbox(t *testing.T, h Harness) {
	t.Run("Migrate", func(t *testing.T) { runMigrate(t, h) })
	t.Run("Insert", func(t *testing.T) { runInsert(t, h) })
	t.Run("Claim", func(t *testing.T) { runClaim(t, h); runDue(t, h) })
	t.Run("Finish", func(t *testing.T) { runFinish(t, h) })
	t.Run("Admin", func(t *testing.T) { runAdmin(t, h) })
	t.Run("Ack", func(t *testing.T) { runAck(t, h) })
	t.Run("Hostile", func(t *testing.T) { runHostile(t, h) })
	t.Run("Bytes", func(t *testing.T) { runBytes(t, h) })
	t.Run("Sequence", func(t *testing.T) { runSequence(t, h) })
	t.Run("Guard", func(t *testing.T) { runGuard(t, h) })
	t.Run("Fork", func(t *testing.T) { runFork(t, h) })
	t.Run("HeldConn", func(t *testing.T) { runHeldConn(t, h) })
	t.Run("UpdateReturning", func(t *testing.T) { runUpdateReturning(t, h) })
}
