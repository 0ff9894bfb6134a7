package gormoutbox

import "time"

// wake tells Config.Wake that committed outbox rows are waiting.
func (p *Plugin) wake() {
	if p.cfg.Wake != nil {
		p.cfg.Wake()
	}
}

// wakeLaterDelays are when wakeLater calls Wake after outbox rows were
// written in a transaction the plugin does not see commit.
func wakeLaterDelays() [3]time.Duration {
	return [...]time.Duration{5 * time.Millisecond, 50 * time.Millisecond, 500 * time.Millisecond}
}

// wakeLater wakes the relay a few times shortly after outbox rows were
// written in a transaction the caller commits (db.Transaction, Begin):
// GORM has no callback for that commit. Best effort; on PostgreSQL the
// relay's Listen is exact, and cron remains the safety net.
func (p *Plugin) wakeLater() {
	if p.cfg.Wake == nil {
		return
	}
	for _, d := range wakeLaterDelays() {
		time.AfterFunc(d, p.cfg.Wake)
	}
}
