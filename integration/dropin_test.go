package integration

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// Models of the drop-in tests: the write paths GORM builds from maps, its
// generics API, db.Table writes, UPDATE … FROM and composite keys.

type Member struct {
	gormoutbox.Source `outbox:"topic:members"`
	ID                uint   `gorm:"primaryKey"`
	Email             string `gorm:"size:64;uniqueIndex"`
	Name              string `gorm:"size:64"`
	Age               int
	Wallets           []Wallet
	Clubs             []Club `gorm:"many2many:member_clubs"`
}

type Wallet struct {
	gormoutbox.Source `outbox:"topic:wallets"`
	ID                uint `gorm:"primaryKey"`
	MemberID          uint
	Kind              string `gorm:"size:16"`
}

type Club struct {
	gormoutbox.Source `outbox:"topic:clubs"`
	ID                uint   `gorm:"primaryKey"`
	Title             string `gorm:"size:32"`
}

// Note has a generated key and no unique index: a plain []map of notes
// written without the model cannot be found again on PostgreSQL.
type Note struct {
	gormoutbox.Source `outbox:"topic:notes"`
	ID                uint `gorm:"primaryKey"`
	Body              string
}

// CouponLine has a composite key whose parts GORM writes as they are, the
// zero value included.
type CouponLine struct {
	gormoutbox.Source `outbox:"topic:coupon-lines"`
	CouponID          uint   `gorm:"primaryKey;autoIncrement:false"`
	ProductID         string `gorm:"primaryKey;size:16"`
	Amount            int
}

var dropinModels = []any{&Member{}, &Wallet{}, &Club{}, &Note{}, &CouponLine{}, &Stamped{}, &Plain{}}

// eventLog reads the outbox rows written since its last call.
type eventLog struct {
	t    *testing.T
	db   *gorm.DB
	seen int
}

func (l *eventLog) next() []outboxRow {
	l.t.Helper()
	rows := readOutbox(l.t, l.db, "")
	got := rows[l.seen:]
	l.seen = len(rows)
	return got
}

// expect checks the events written since the last call.
func (l *eventLog) expect(name string, err error, wants ...want) []outboxRow {
	l.t.Helper()
	if err != nil {
		l.t.Fatalf("%s: %v", name, err)
	}
	got := l.next()
	if len(got) != len(wants) {
		for _, r := range got {
			l.t.Logf("%s: %s %s agg=%s payload=%s", name, r.Topic, r.Type, r.AggregateID, r.RawPayload)
		}
		l.t.Fatalf("%s: %d events, want %d", name, len(got), len(wants))
	}
	checkRows(l.t, got, wants...)
	return got
}

func idOf(t *testing.T, db *gorm.DB, email string) string {
	t.Helper()
	var m Member
	if err := db.Session(&gorm.Session{NewDB: true}).Where("email = ?", email).Take(&m).Error; err != nil {
		t.Fatalf("member %s: %v", email, err)
	}
	return strconv.Itoa(int(m.ID))
}

// Creates from maps, through the model and through db.Table, with and
// without the key; one event per row, the row as committed.
func TestCaptureMapCreates(t *testing.T) {
	forEachCaptureDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{Models: dropinModels}, dropinModels...)
		l := &eventLog{t: t, db: db}

		m := map[string]any{"email": "a@x", "name": "a", "age": 1}
		err := db.Model(&Member{}).Create(m).Error
		l.expect("map", err, want{Topic: "members", Type: "MemberCreated", AggregateID: idOf(t, db, "a@x"),
			Payload: map[string]any{"Email": "a@x", "Name": "a", "Age": 1}})

		err = db.Model(&Member{}).Create(map[string]any{"ID": 100, "Email": "b@x", "Name": "b"}).Error
		l.expect("map with key, by field names", err, want{Type: "MemberCreated", AggregateID: "100",
			Payload: map[string]any{"ID": 100, "Email": "b@x", "Name": "b", "Age": 0}})

		ms := []map[string]any{{"email": "c@x", "name": "c"}, {"email": "d@x", "name": "d", "age": 4}}
		err = db.Model(&Member{}).Create(&ms).Error
		l.expect("&[]map", err,
			want{Type: "MemberCreated", AggregateID: idOf(t, db, "c@x"), Payload: map[string]any{"Email": "c@x"}},
			want{Type: "MemberCreated", AggregateID: idOf(t, db, "d@x"), Payload: map[string]any{"Email": "d@x", "Age": 4}})

		err = db.Model(&Member{}).Create([]map[string]any{{"id": 200, "email": "e@x"}, {"id": 201, "email": "f@x"}}).Error
		if d.Name == "mysql" {
			l.expect("[]map with keys", err,
				want{Type: "MemberCreated", AggregateID: "200"}, want{Type: "MemberCreated", AggregateID: "201"})
		} else if err == nil || errors.Is(err, gormoutbox.ErrUncapturedWrite) {
			// GORM itself cannot scan RETURNING into a plain []map.
			t.Fatalf("[]map with RETURNING: err %v, want GORM's own scan error", err)
		}

		// Some maps with the key, some without: on MySQL GORM writes
		// LastInsertId, +1, … into all of them, so the others are found
		// by their unique email.
		// (On PostgreSQL GORM writes NULL for the missing key, which the
		// column refuses, with or without the plugin.)
		mixed := []map[string]any{{"id": 300, "email": "k1@x"}, {"email": "k2@x"}}
		err = db.Model(&Member{}).Create(&mixed).Error
		if d.Name == "postgres" {
			if err == nil || errors.Is(err, gormoutbox.ErrUncapturedWrite) {
				t.Fatalf("keys mixed on PostgreSQL: %v, want the database's error", err)
			}
			l.expect("failed", nil)
		} else {
			l.expect("&[]map, keys mixed", err, want{AggregateID: "300", Payload: map[string]any{"Email": "k1@x"}},
				want{AggregateID: idOf(t, db, "k2@x"), Payload: map[string]any{"Email": "k2@x"}})
		}
		err = db.Model(&Note{}).Create(&[]map[string]any{{"id": 300, "body": "n"}, {"body": "m"}}).Error
		switch d.Name {
		case "postgres":
			if err == nil || errors.Is(err, gormoutbox.ErrUncapturedWrite) {
				t.Fatalf("keys mixed on PostgreSQL: %v, want the database's error", err)
			}
		case "mysql":
			if !errors.Is(err, gormoutbox.ErrUncapturedWrite) {
				t.Fatalf("keys mixed, no unique index, MySQL: %v, want ErrUncapturedWrite", err)
			}
			l.expect("refused", nil)
		default:
			l.expect("&[]map of notes, keys mixed", err, want{AggregateID: "300"}, want{Type: "NoteCreated", Payload: map[string]any{"Body": "m"}})
		}

		err = db.Table("members").Create(map[string]any{"email": "g@x", "name": "g"}).Error
		l.expect("Table map", err, want{Type: "MemberCreated", AggregateID: idOf(t, db, "g@x"), Payload: map[string]any{"Name": "g"}})

		tm := []map[string]any{{"email": "h@x"}, {"email": "i@x"}}
		err = db.Table("members").Create(&tm).Error
		l.expect("Table &[]map", err,
			want{AggregateID: idOf(t, db, "h@x")}, want{AggregateID: idOf(t, db, "i@x")})

		err = db.Table("members").Create([]map[string]any{{"email": "j@x"}, {"email": "k@x"}}).Error
		l.expect("Table []map found by its unique index", err,
			want{AggregateID: idOf(t, db, "j@x")}, want{AggregateID: idOf(t, db, "k@x")})

		err = db.Table("notes").Create([]map[string]any{{"body": "n1"}, {"body": "n2"}}).Error
		if d.Name == "postgres" {
			if !errors.Is(err, gormoutbox.ErrUncapturedWrite) || !strings.Contains(err.Error(), "Note") {
				t.Fatalf("Table []map without key or unique index on PostgreSQL: err %v, want ErrUncapturedWrite naming Note", err)
			}
			if n := count(t, db, &Note{}); n != 0 {
				t.Fatalf("refused create left %d notes", n)
			}
			l.expect("refused", nil)
		} else {
			l.expect("Table []map, LastInsertId", err, want{Type: "NoteCreated", Payload: map[string]any{"Body": "n1"}},
				want{Type: "NoteCreated", Payload: map[string]any{"Body": "n2"}})
		}

		// Values the database computes or converts: the payload shows what
		// it stored, not what the map held.
		err = db.Model(&Member{}).Create(map[string]any{"email": "expr@x", "age": gorm.Expr("2 + 3")}).Error
		l.expect("map with an expression", err, want{AggregateID: idOf(t, db, "expr@x"), Payload: map[string]any{"Age": 5}})
		err = db.Model(&Member{}).Create(map[string]any{"email": "conv@x", "age": 1.7}).Error
		var conv Member
		db.Where("email = ?", "conv@x").Take(&conv) // 2 on MySQL (rounded), 1 through pgx (truncated)
		l.expect("map with a converted value", err, want{AggregateID: idOf(t, db, "conv@x"), Payload: map[string]any{"Age": conv.Age}})
		err = db.Model(&Stamped{}).Create(map[string]any{"name": "st"}).Error
		got := l.expect("map, database default", err, want{Type: "StampedCreated", Payload: map[string]any{"Name": "st"}})
		var stamped Stamped
		db.Take(&stamped)
		if ts, _ := got[0].Payload["Stamp"].(string); stamped.Stamp.IsZero() || !strings.HasPrefix(ts, stamped.Stamp.UTC().Format("2006-01-02T15:04:05")) {
			t.Fatalf("database default: payload Stamp %v, row %v", got[0].Payload["Stamp"], stamped.Stamp)
		}

		err = db.Table("plains").Create(map[string]any{"name": "untagged"}).Error
		l.expect("untagged table", err)
		if n := count(t, db, &Plain{}); n != 1 {
			t.Fatalf("untagged table: %d rows, want 1", n)
		}

		if err := db.Create(&[]Member{}).Error; !errors.Is(err, gorm.ErrEmptySlice) {
			t.Fatalf("empty slice: %v, want gorm.ErrEmptySlice", err)
		}
		if err := db.Model(&Member{}).Create([]map[string]any{}).Error; !errors.Is(err, gorm.ErrEmptySlice) {
			t.Fatalf("empty []map: %v, want gorm.ErrEmptySlice", err)
		}
		l.expect("empty slices", nil)
	})
}

// db.Table writes to a tagged model's table are captured as its writes;
// updates and deletes by condition, with no model scopes.
func TestCaptureTableWrites(t *testing.T) {
	forEachCaptureDialect(t, func(t *testing.T, d testenv.Dialect) {
		// No Config.Models: the models are known from GORM's own schema
		// cache (AutoMigrate parsed them), not from a write through them.
		db, _ := setup(t, d, nil, gormoutbox.Config{}, dropinModels...)
		l := &eventLog{t: t, db: db}
		err := db.Table("notes").Create(map[string]any{"body": "first write"}).Error
		l.expect("Table create before any write through the model", err,
			want{Topic: "notes", Type: "NoteCreated", Payload: map[string]any{"Body": "first write"}})
		ms := []Member{{Email: "a@x", Name: "a"}, {Email: "b@x", Name: "b"}, {Email: "c@x", Name: "c"}}
		l.expect("seed", db.Create(&ms).Error, want{}, want{}, want{})

		err = db.Table("members").Where("email IN ?", []string{"a@x", "b@x"}).Update("age", 7).Error
		l.expect("Table Update", err,
			want{Type: "MemberUpdated", AggregateID: strconv.Itoa(int(ms[0].ID)), Payload: map[string]any{"Age": 7, "Name": "a"}},
			want{Type: "MemberUpdated", AggregateID: strconv.Itoa(int(ms[1].ID)), Payload: map[string]any{"Age": 7, "Name": "b"}})

		err = db.Table("members").Where("email = ?", "c@x").Updates(map[string]any{"name": "C", "age": 3}).Error
		l.expect("Table Updates", err, want{Type: "MemberUpdated", Payload: map[string]any{"Name": "C", "Age": 3}})

		err = db.Table("members").Where("email = ?", "nobody").Update("age", 1).Error
		l.expect("Table Update of nothing", err)

		var schemaName string
		q := "SELECT current_schema()"
		if d.Name != "postgres" {
			q = "SELECT DATABASE()"
		}
		if err := db.Raw(q).Scan(&schemaName).Error; err != nil {
			t.Fatal(err)
		}
		err = db.Table(schemaName+".members").Where("email = ?", "c@x").Update("age", 4).Error
		l.expect("schema-qualified Table Update", err, want{Type: "MemberUpdated", AggregateID: strconv.Itoa(int(ms[2].ID)), Payload: map[string]any{"Age": 4}})

		err = db.Table("members m").Where("m.email = ?", "c@x").Update("age", 5).Error
		if !errors.Is(err, gormoutbox.ErrUncapturedWrite) || !strings.Contains(err.Error(), "Member") {
			t.Fatalf("aliased Table Update: %v, want ErrUncapturedWrite naming Member", err)
		}
		l.expect("refused alias", nil)
		var c Member
		if db.Where("email = ?", "c@x").Take(&c); c.Age != 4 {
			t.Fatalf("refused aliased update changed the row: age %d", c.Age)
		}

		err = db.Table("members").Where("email = ?", "b@x").Delete(nil).Error
		l.expect("Table Delete", err, want{Type: "MemberDeleted", AggregateID: strconv.Itoa(int(ms[1].ID)), Payload: map[string]any{"Email": "b@x"}})

		err = db.Table("members").Update("age", 1).Error
		if !errors.Is(err, gorm.ErrMissingWhereClause) {
			t.Fatalf("Table Update without WHERE: %v, want gorm.ErrMissingWhereClause", err)
		}
		err = db.Table("plains").Where("1 = 1").Update("name", "x").Error
		l.expect("untagged table", err)

		// An untagged model pointed at a tagged model's table through
		// db.Table: refused, nothing written.
		for name, write := range map[string]func() error{
			"Table with another model": func() error { return db.Table("members").Create(&Plain{Name: "lite@x"}).Error },
			"update through it": func() error {
				return db.Table("members").Model(&Plain{}).Where("email = ?", "a@x").Update("name", "lite@x").Error
			},
		} {
			if err := write(); !errors.Is(err, gormoutbox.ErrUncapturedWrite) || !strings.Contains(err.Error(), "Member") {
				t.Fatalf("%s: %v, want ErrUncapturedWrite naming Member", name, err)
			}
		}
		var lite int64
		db.Model(&Member{}).Where("name LIKE ?", "lite%").Count(&lite)
		if lite != 0 {
			t.Fatalf("refused writes left %d rows", lite)
		}
		l.expect("refused untagged models", nil)
	})
}

// GORM's generics API, including the maps it builds for Set(...) and the
// association operations of clause.Association.
func TestCaptureGenerics(t *testing.T) {
	forEachCaptureDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{Models: dropinModels}, dropinModels...)
		l := &eventLog{t: t, db: db}
		ctx := context.Background()

		m := Member{Email: "a@x", Name: "a"}
		l.expect("G Create", gorm.G[Member](db).Create(ctx, &m),
			want{Type: "MemberCreated", AggregateID: strconv.Itoa(int(m.ID)), Payload: map[string]any{"Name": "a"}})
		id := strconv.Itoa(int(m.ID))

		_, err := gorm.G[Member](db).Where("id = ?", m.ID).Update(ctx, "name", "a2")
		l.expect("G Update", err, want{Type: "MemberUpdated", AggregateID: id, Payload: map[string]any{"Name": "a2"}})

		_, err = gorm.G[Member](db).Where("id = ?", m.ID).Updates(ctx, Member{Age: 9})
		l.expect("G Updates", err, want{Type: "MemberUpdated", AggregateID: id, Payload: map[string]any{"Name": "a2", "Age": 9}})

		err = gorm.G[Member](db).Set(
			clause.Assignment{Column: clause.Column{Name: "email"}, Value: "s@x"},
			clause.Assignment{Column: clause.Column{Name: "name"}, Value: "set"},
		).Create(ctx)
		setID := idOf(t, db, "s@x")
		l.expect("G Set Create", err, want{Type: "MemberCreated", AggregateID: setID, Payload: map[string]any{"Name": "set"}})

		_, err = gorm.G[Member](db).Where("email = ?", "s@x").Set(clause.Assignment{Column: clause.Column{Name: "age"}, Value: 5}).Update(ctx)
		l.expect("G Set Update", err, want{Type: "MemberUpdated", AggregateID: idOf(t, db, "s@x"), Payload: map[string]any{"Age": 5}})

		// Association operations.
		byID := gorm.G[Member](db).Where("id = ?", m.ID)
		_, err = byID.Set(clause.Association{Association: "Wallets", Type: clause.OpCreate,
			Set: []clause.Assignment{{Column: clause.Column{Name: "kind"}, Value: "gold"}}}).Update(ctx)
		// Append saves the owner too (an UPDATE of its row, which has its event).
		rows := l.expect("OpCreate has many", err, want{Type: "WalletCreated", Payload: map[string]any{"Kind": "gold", "MemberID": int(m.ID)}},
			want{Type: "MemberUpdated", AggregateID: id})
		walletID := rows[0].AggregateID

		_, err = byID.Set(clause.Association{Association: "Wallets", Type: clause.OpUpdate,
			Set: []clause.Assignment{{Column: clause.Column{Name: "kind"}, Value: "silver"}}}).Update(ctx)
		l.expect("OpUpdate has many", err, want{Type: "WalletUpdated", AggregateID: walletID, Payload: map[string]any{"Kind": "silver"}})

		_, err = byID.Set(clause.Association{Association: "Clubs", Type: clause.OpCreate,
			Values: []any{&Club{Title: "g1"}}}).Update(ctx)
		got := l.expect("OpCreate many2many", err, want{Type: "MemberUpdated", AggregateID: id}, want{Type: "ClubCreated", Payload: map[string]any{"Title": "g1"}})
		clubID := got[1].AggregateID

		_, err = byID.Set(clause.Association{Association: "Clubs", Type: clause.OpUpdate,
			Set: []clause.Assignment{{Column: clause.Column{Name: "title"}, Value: "g2"}}}).Update(ctx)
		l.expect("OpUpdate many2many (through db.Table)", err, want{Type: "ClubUpdated", AggregateID: clubID, Payload: map[string]any{"Title": "g2"}})

		_, err = byID.Set(clause.Association{Association: "Clubs", Type: clause.OpDelete}).Update(ctx)
		l.expect("OpDelete many2many (join rows only)", err)

		_, err = byID.Set(clause.Association{Association: "Wallets", Type: clause.OpDelete}).Update(ctx)
		l.expect("OpDelete has many", err, want{Type: "WalletDeleted", AggregateID: walletID})

		err = db.Model(&m).Association("Wallets").Append(map[string]any{"kind": "bronze"})
		l.expect("Association Append(map)", err, want{Type: "WalletCreated", Payload: map[string]any{"Kind": "bronze", "MemberID": int(m.ID)}},
			want{Type: "MemberUpdated", AggregateID: id})

		err = db.Model(&m).Association("Clubs").Replace(map[string]any{"title": "replaced"})
		l.expect("Association Replace(map), many2many", err,
			want{Type: "ClubCreated", Payload: map[string]any{"Title": "replaced"}}, want{Type: "MemberUpdated", AggregateID: id})
		var joined []string
		db.Raw("SELECT c.title FROM clubs c JOIN member_clubs mc ON mc.club_id = c.id WHERE mc.member_id = ?", m.ID).Scan(&joined)
		if fmt.Sprint(joined) != "[replaced]" {
			t.Fatalf("after Replace the member's clubs are %v", joined)
		}

		n, err := gorm.G[Member](db).Where("email = ?", "s@x").Delete(ctx)
		if err == nil && n != 1 {
			t.Fatalf("G Delete: %d rows", n)
		}
		l.expect("G Delete", err, want{Type: "MemberDeleted", AggregateID: setID})
	})
}

// UPDATE … FROM on PostgreSQL: the locking read joins the FROM tables.
func TestCaptureUpdateFrom(t *testing.T) {
	d := testenv.Dialects()[0]
	db, _ := setup(t, d, nil, gormoutbox.Config{Models: dropinModels}, dropinModels...)
	l := &eventLog{t: t, db: db}
	ms := []Member{
		{Email: "a@x", Wallets: []Wallet{{Kind: "gold"}, {Kind: "gold"}}},
		{Email: "b@x", Wallets: []Wallet{{Kind: "tin"}}},
		{Email: "c@x", Wallets: []Wallet{{Kind: "gold"}}},
	}
	if err := db.Create(&ms).Error; err != nil {
		t.Fatal(err)
	}
	l.next()
	err := db.Model(&Member{}).Clauses(clause.From{Tables: []clause.Table{{Name: "wallets"}}}).
		Where("wallets.member_id = members.id AND wallets.kind = ?", "gold").Update("name", "vip").Error
	l.expect("UPDATE FROM", err,
		want{Type: "MemberUpdated", AggregateID: strconv.Itoa(int(ms[0].ID)), Payload: map[string]any{"Name": "vip"}},
		want{Type: "MemberUpdated", AggregateID: strconv.Itoa(int(ms[2].ID)), Payload: map[string]any{"Name": "vip"}})
	var names []string
	db.Model(&Member{}).Order("id").Pluck("name", &names)
	if fmt.Sprint(names) != "[vip  vip]" {
		t.Fatalf("names %q", names)
	}
}

// Composite keys with a zero-value part, in creates and upserts.
func TestCaptureZeroKeyPart(t *testing.T) {
	forEachCaptureDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{Models: dropinModels}, dropinModels...)
		l := &eventLog{t: t, db: db}
		c := CouponLine{CouponID: 2, ProductID: "", Amount: 1}
		l.expect("create", db.Create(&c).Error, want{Type: "CouponLineCreated", AggregateID: `["2",""]`})
		c.Amount = 2
		l.expect("upsert existing", db.Clauses(clause.OnConflict{UpdateAll: true}).Create(&c).Error,
			want{Type: "CouponLineUpdated", AggregateID: `["2",""]`, Payload: map[string]any{"Amount": 2}})
		lines := []CouponLine{{CouponID: 2, ProductID: "", Amount: 3}, {CouponID: 0, ProductID: "", Amount: 4}}
		l.expect("Save", db.Save(&lines).Error,
			want{Type: "CouponLineUpdated", AggregateID: `["2",""]`, Payload: map[string]any{"Amount": 3}},
			want{Type: "CouponLineCreated", AggregateID: `["0",""]`, Payload: map[string]any{"Amount": 4}})
	})
}

// Upserts that update existing rows, on MariaDB opened both ways (with
// RETURNING GORM counts one row per row given), and a conflict on another
// unique key, which is refused (MySQL) or fails (PostgreSQL) with nothing
// written.
func TestCaptureUpsertReturning(t *testing.T) {
	forEachCaptureDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{Models: dropinModels}, dropinModels...)
		l := &eventLog{t: t, db: db}
		ms := []Member{{Email: "a@x", Name: "a"}, {Email: "b@x", Name: "b"}}
		l.expect("seed", db.Create(&ms).Error, want{}, want{})
		ms[0].Name = "a2"
		ms = append(ms, Member{Email: "c@x", Name: "c"})
		l.expect("Save existing and new", db.Save(&ms).Error,
			want{Type: "MemberUpdated", AggregateID: strconv.Itoa(int(ms[0].ID)), Payload: map[string]any{"Name": "a2"}},
			want{Type: "MemberCreated", AggregateID: strconv.Itoa(int(ms[2].ID)), Payload: map[string]any{"Name": "c"}})
		ms[1].Age = 30
		l.expect("OnConflict UpdateAll", db.Clauses(clause.OnConflict{UpdateAll: true}).Create(&ms).Error,
			want{Type: "MemberUpdated", AggregateID: strconv.Itoa(int(ms[1].ID)), Payload: map[string]any{"Age": 30}})

		parent := Member{Email: "p@x", Wallets: []Wallet{{Kind: "w1"}}}
		l.expect("parent with child", db.Create(&parent).Error, want{Type: "MemberCreated"}, want{Type: "WalletCreated"})
		parent.Name = "p2"
		parent.Wallets[0].Kind = "w2"
		l.expect("Save parent whose child exists", db.Session(&gorm.Session{FullSaveAssociations: true}).Save(&parent).Error,
			want{Type: "MemberUpdated", Payload: map[string]any{"Name": "p2"}}, want{Type: "WalletUpdated", Payload: map[string]any{"Kind": "w2"}})

		clash := Member{ID: 999, Email: "a@x", Name: "clash"}
		err := db.Clauses(clause.OnConflict{UpdateAll: true}).Create(&clash).Error
		if err == nil {
			t.Fatalf("upsert on the key meeting another unique key: no error")
		}
		if d.Name != "postgres" && !errors.Is(err, gormoutbox.ErrUncapturedWrite) {
			t.Fatalf("upsert meeting another unique key: %v, want ErrUncapturedWrite", err)
		}
		l.expect("refused", nil)
		var a Member
		db.Where("email = ?", "a@x").Take(&a)
		if a.Name != "a2" {
			t.Fatalf("refused upsert changed the row: %+v", a)
		}
	})
}

// Every drop-in path in one transaction that rolls back: no row anywhere.
func TestCaptureDropinRollback(t *testing.T) {
	forEachCaptureDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{Models: dropinModels}, dropinModels...)
		ctx := context.Background()
		errRollback := errors.New("roll back")
		err := db.Transaction(func(tx *gorm.DB) error {
			steps := []error{
				tx.Model(&Member{}).Create(map[string]any{"email": "a@x"}).Error,
				tx.Table("members").Create(map[string]any{"email": "b@x"}).Error,
				tx.Table("members").Where("email = ?", "a@x").Update("age", 2).Error,
				gorm.G[Member](tx).Create(ctx, &Member{Email: "c@x"}),
				gorm.G[Member](tx).Set(clause.Assignment{Column: clause.Column{Name: "email"}, Value: "d@x"}).Create(ctx),
				tx.Create(&CouponLine{CouponID: 1}).Error,
				tx.Table("members").Where("email = ?", "b@x").Delete(nil).Error,
			}
			if d.Name == "postgres" {
				steps = append(steps, tx.Model(&Member{}).Clauses(clause.From{Tables: []clause.Table{{Name: "coupon_lines"}}}).
					Where("coupon_lines.coupon_id = members.id").Update("name", "x").Error)
			}
			for i, err := range steps {
				if err != nil {
					return fmt.Errorf("step %d: %w", i, err)
				}
			}
			if n := len(readOutboxTx(t, tx)); n < 7 {
				return fmt.Errorf("%d events inside the transaction, want at least 7", n)
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			t.Fatal(err)
		}
		if rows := readOutbox(t, db, ""); len(rows) != 0 {
			t.Fatalf("%d outbox rows after rollback", len(rows))
		}
		if n := count(t, db, &Member{}) + count(t, db, &CouponLine{}); n != 0 {
			t.Fatalf("%d business rows after rollback", n)
		}
	})
}

func readOutboxTx(t *testing.T, tx *gorm.DB) []string {
	t.Helper()
	var ids []string
	if err := tx.Session(&gorm.Session{NewDB: true}).Table("outbox").Pluck("event_id", &ids).Error; err != nil {
		t.Fatal(err)
	}
	return ids
}

// dropinWrites is every drop-in path, in order; each returns its error.
func dropinWrites(d testenv.Dialect) []func(db *gorm.DB) error {
	ctx := context.Background()
	ws := []func(db *gorm.DB) error{
		func(db *gorm.DB) error {
			return db.Model(&Member{}).Create(map[string]any{"email": "a@x", "age": 1}).Error
		},
		func(db *gorm.DB) error {
			return db.Model(&Member{}).Create(&[]map[string]any{{"email": "b@x"}, {"id": 50, "email": "c@x"}}).Error
		},
		func(db *gorm.DB) error {
			return db.Table("members").Create(map[string]any{"email": "d@x", "name": "d"}).Error
		},
		func(db *gorm.DB) error {
			return db.Table("members").Create([]map[string]any{{"email": "e@x"}, {"email": "f@x"}}).Error
		},
		func(db *gorm.DB) error {
			return db.Table("members").Where("email IN ?", []string{"a@x", "e@x"}).Update("age", 9).Error
		},
		func(db *gorm.DB) error { return gorm.G[Member](db).Create(ctx, &Member{Email: "g@x"}) },
		func(db *gorm.DB) error {
			_, err := gorm.G[Member](db).Where("email = ?", "g@x").Update(ctx, "name", "gee")
			return err
		},
		func(db *gorm.DB) error {
			return gorm.G[Member](db).Set(clause.Assignment{Column: clause.Column{Name: "email"}, Value: "h@x"}).Create(ctx)
		},
		func(db *gorm.DB) error {
			_, err := gorm.G[Member](db).Where("email = ?", "a@x").Set(clause.Association{Association: "Wallets", Type: clause.OpCreate,
				Set: []clause.Assignment{{Column: clause.Column{Name: "kind"}, Value: "gold"}}}).Update(ctx)
			return err
		},
		func(db *gorm.DB) error {
			_, err := gorm.G[Member](db).Where("email = ?", "a@x").Set(clause.Association{Association: "Clubs", Type: clause.OpCreate,
				Values: []any{&Club{Title: "t"}}}).Update(ctx)
			return err
		},
		func(db *gorm.DB) error {
			_, err := gorm.G[Member](db).Where("email = ?", "a@x").Set(clause.Association{Association: "Clubs", Type: clause.OpUpdate,
				Set: []clause.Assignment{{Column: clause.Column{Name: "title"}, Value: "t2"}}}).Update(ctx)
			return err
		},
		func(db *gorm.DB) error {
			return db.Save(&[]CouponLine{{CouponID: 2, ProductID: "", Amount: 1}, {CouponID: 3, ProductID: "p"}}).Error
		},
		func(db *gorm.DB) error {
			return db.Clauses(clause.OnConflict{UpdateAll: true}).Create(&CouponLine{CouponID: 2, ProductID: "", Amount: 5}).Error
		},
		func(db *gorm.DB) error { return db.Table("members").Where("email = ?", "f@x").Delete(nil).Error },
		func(db *gorm.DB) error {
			_, err := gorm.G[Member](db).Where("email = ?", "h@x").Delete(ctx)
			return err
		},
	}
	if d.Name == "postgres" {
		ws = append(ws, func(db *gorm.DB) error {
			return db.Model(&Member{}).Clauses(clause.From{Tables: []clause.Table{{Name: "wallets"}}}).
				Where("wallets.member_id = members.id AND wallets.kind = ?", "gold").Update("name", "vip").Error
		})
	}
	return ws
}

// dumpTables renders the business tables of the drop-in models.
func dumpTables(t *testing.T, db *gorm.DB) string {
	t.Helper()
	var out strings.Builder
	for _, q := range []string{
		"SELECT id, email, name, age FROM members ORDER BY id",
		"SELECT id, member_id, kind FROM wallets ORDER BY id",
		"SELECT id, title FROM clubs ORDER BY id",
		"SELECT member_id, club_id FROM member_clubs ORDER BY member_id, club_id",
		"SELECT coupon_id, product_id, amount FROM coupon_lines ORDER BY coupon_id, product_id",
	} {
		rows, err := db.Raw(q).Rows()
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			for i, v := range vals {
				if b, ok := v.([]byte); ok {
					vals[i] = string(b)
				}
			}
			fmt.Fprintln(&out, vals...)
		}
		rows.Close()
	}
	return out.String()
}

// The same writes with and without the plugin: the same errors and the
// same business rows; with it, events.
func TestDropinSameRowsWithoutPlugin(t *testing.T) {
	forEachCaptureDialect(t, func(t *testing.T, d testenv.Dialect) {
		with, _ := setup(t, d, nil, gormoutbox.Config{Models: dropinModels}, dropinModels...)
		without := d.Open(t, nil)
		if err := without.AutoMigrate(dropinModels...); err != nil {
			t.Fatal(err)
		}
		for i, w := range dropinWrites(d) {
			e1, e2 := w(with), w(without)
			if (e1 == nil) != (e2 == nil) {
				t.Fatalf("write %d: with the plugin %v, without %v", i, e1, e2)
			}
		}
		a, b := dumpTables(t, with), dumpTables(t, without)
		if a != b {
			t.Fatalf("business rows differ\nwith the plugin:\n%s\nwithout:\n%s", a, b)
		}
		if n := len(readOutbox(t, with, "")); n < len(dropinWrites(d)) {
			t.Fatalf("%d events for %d writes", n, len(dropinWrites(d)))
		}
	})
}

// Updates and deletes with Order and Limit: MySQL writes them (the events
// are those of the rows touched), GORM leaves them out on PostgreSQL.
func TestCaptureWriteLimit(t *testing.T) {
	forEachCaptureDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, dropinModels...)
		l := &eventLog{t: t, db: db}
		ms := make([]Member, 5)
		for i := range ms {
			ms[i] = Member{Email: fmt.Sprintf("m%d@x", i)}
		}
		if err := db.Create(&ms).Error; err != nil {
			t.Fatal(err)
		}
		l.next()
		id := func(i int) string { return strconv.Itoa(int(ms[i].ID)) }
		err := db.Model(&Member{}).Where("age = ?", 0).Order("id desc").Limit(2).Update("name", "top").Error
		if d.Name == "postgres" {
			l.expect("update, limit ignored", err, want{AggregateID: id(0)}, want{AggregateID: id(1)}, want{AggregateID: id(2)},
				want{AggregateID: id(3)}, want{AggregateID: id(4)})
			return
		}
		l.expect("update ORDER BY id DESC LIMIT 2", err,
			want{Type: "MemberUpdated", AggregateID: id(4), Payload: map[string]any{"Name": "top"}},
			want{Type: "MemberUpdated", AggregateID: id(3), Payload: map[string]any{"Name": "top"}})
		var names []string
		db.Model(&Member{}).Order("id").Pluck("name", &names)
		if fmt.Sprint(names) != "[   top top]" {
			t.Fatalf("names after the limited update: %q", names)
		}
		err = db.Where("name = ?", "").Limit(1).Delete(&Member{}).Error
		l.expect("delete LIMIT 1", err, want{Type: "MemberDeleted", AggregateID: id(0)})
		err = db.Model(&Member{}).Where("1 = 1").Limit(0).Update("age", 3).Error
		l.expect("update LIMIT 0", err)
		if n := count(t, db, &Member{}); n != 4 {
			t.Fatalf("%d members, want 4", n)
		}
	})
}
