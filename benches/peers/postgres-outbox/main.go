// The seed's design, for the side-by-side benchmark (scripts/peer-bench): a transactional
// outbox table in PostgreSQL, written by a small HTTP front that takes the same CloudEvents
// requests as edge-outbox (structured or batched mode) and inserts each request's events in one
// transaction (fsync and synchronous_commit as the server is set: on), answering 202 once the
// commit returns; and a poller that every -poll interval publishes the unpublished rows to
// Kafka with an idempotent producer (keyed by tenant, the CloudEvents binary binding's ce_*
// headers) and marks them published, rows locked with SELECT ... FOR UPDATE SKIP LOCKED.
// Small and plain on purpose: what a team would write instead of a sidecar.
//
// With -direct it is the other thing a team would do instead: no outbox at all, the same HTTP
// front producing each request's events straight to Kafka (idempotent producer, acks=all) and
// answering 202 once the broker has them; while the broker is away requests fail.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
)

const schema = `CREATE TABLE IF NOT EXISTS outbox (
	id bigserial PRIMARY KEY,
	event_id text NOT NULL,
	source text NOT NULL,
	type text NOT NULL,
	tenant text NOT NULL,
	time text,
	subject text,
	data bytea NOT NULL,
	published boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (id) WHERE NOT published;`

type event struct {
	ID      string          `json:"id"`
	Source  string          `json:"source"`
	Type    string          `json:"type"`
	Time    string          `json:"time"`
	Subject string          `json:"subject"`
	Data    json.RawMessage `json:"data"`
}

// The tenant key as edge-outbox takes it by default: data.tenantId, else subject.
func tenant(e event) string {
	var data struct {
		TenantID string `json:"tenantId"`
	}
	if json.Unmarshal(e.Data, &data) == nil && data.TenantID != "" {
		return data.TenantID
	}
	return e.Subject
}

// The Kafka record of an event, as edge-outbox sends it (binary mode).
func record(e event, tenant string, data []byte) *kgo.Record {
	return &kgo.Record{
		Topic: e.Type,
		Key:   []byte(tenant),
		Value: data,
		Headers: []kgo.RecordHeader{
			{Key: "ce_specversion", Value: []byte("1.0")},
			{Key: "ce_id", Value: []byte(e.ID)},
			{Key: "ce_source", Value: []byte(e.Source)},
			{Key: "ce_type", Value: []byte(e.Type)},
			{Key: "ce_time", Value: []byte(e.Time)},
			{Key: "ce_subject", Value: []byte(e.Subject)},
			{Key: "content-type", Value: []byte("application/json")},
		},
	}
}

// store keeps a request's events (in one transaction, or at the broker) and returns their ids.
type store func(ctx context.Context, events []event) ([]int64, error)

// insert is the outbox's store: one transaction per request.
func insert(pool *pgxpool.Pool) store {
	return func(ctx context.Context, events []event) ([]int64, error) {
		ids := make([]int64, 0, len(events))
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			batch := &pgx.Batch{}
			for _, e := range events {
				batch.Queue(`INSERT INTO outbox (event_id, source, type, tenant, time, subject, data)
					VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`,
					e.ID, e.Source, e.Type, tenant(e), e.Time, e.Subject, []byte(e.Data))
			}
			results := tx.SendBatch(ctx, batch)
			for range events {
				var id int64
				if err := results.QueryRow().Scan(&id); err != nil {
					results.Close()
					return err
				}
				ids = append(ids, id)
			}
			return results.Close()
		})
		return ids, err
	}
}

// produce is the plain producer's store: the broker's acknowledgement.
func produce(producer *kgo.Client) store {
	var next atomic.Int64
	return func(ctx context.Context, events []event) ([]int64, error) {
		records := make([]*kgo.Record, 0, len(events))
		for _, e := range events {
			records = append(records, record(e, tenant(e), []byte(e.Data)))
		}
		if err := producer.ProduceSync(ctx, records...).FirstErr(); err != nil {
			return nil, err
		}
		ids := make([]int64, 0, len(events))
		for _, r := range records {
			ids = append(ids, next.Add(1))
			publishedBytes.Add(int64(len(r.Value)))
		}
		publishedEvents.Add(int64(len(records)))
		return ids, nil
	}
}

func ingest(keep store) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var events []event
		if strings.HasPrefix(r.Header.Get("content-type"), "application/cloudevents-batch+json") {
			err = json.Unmarshal(body, &events)
		} else {
			var one event
			err = json.Unmarshal(body, &one)
			events = []event{one}
		}
		if err != nil || len(events) == 0 {
			http.Error(w, "not CloudEvents JSON", http.StatusBadRequest)
			return
		}
		for _, e := range events {
			if e.ID == "" || e.Source == "" || e.Type == "" {
				http.Error(w, "id, source and type are required", http.StatusBadRequest)
				return
			}
		}
		ids, err := keep(r.Context(), events)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("content-type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(map[string][]int64{"sequences": ids})
	}
}

// What the poller has published, for /v1/status (the load tool reads it as edge-outbox's).
var publishedEvents, publishedBytes atomic.Int64

// publish sends up to limit unpublished rows and marks them; returns how many.
func publish(ctx context.Context, pool *pgxpool.Pool, producer *kgo.Client, limit int) (int, error) {
	sent := 0
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT id, event_id, source, type, tenant, time, subject, data
			FROM outbox WHERE NOT published ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`, limit)
		if err != nil {
			return err
		}
		var ids []int64
		var records []*kgo.Record
		for rows.Next() {
			var id int64
			var e event
			var tenant string
			var data []byte
			if err := rows.Scan(&id, &e.ID, &e.Source, &e.Type, &tenant, &e.Time, &e.Subject, &data); err != nil {
				return err
			}
			ids = append(ids, id)
			records = append(records, record(e, tenant, data))
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(records) == 0 {
			return nil
		}
		if err := producer.ProduceSync(ctx, records...).FirstErr(); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE outbox SET published = true WHERE id = ANY($1)`, ids); err != nil {
			return err
		}
		for _, r := range records {
			publishedBytes.Add(int64(len(r.Value)))
		}
		sent = len(records)
		return nil
	})
	if err == nil && sent > 0 {
		publishedEvents.Add(int64(sent))
	}
	return sent, err
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "HTTP address")
	database := flag.String("database", "postgres://postgres@127.0.0.1:5432/postgres", "PostgreSQL URL")
	brokers := flag.String("brokers", "127.0.0.1:9092", "Kafka bootstrap servers")
	poll := flag.Duration("poll", 10*time.Second, "how often the poller publishes")
	batch := flag.Int("batch", 10000, "rows per publish transaction")
	direct := flag.Bool("direct", false, "no outbox: produce each request to Kafka and answer once the broker has it")
	flag.Parse()
	ctx := context.Background()
	producer, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(*brokers, ",")...),
		kgo.ProducerBatchCompression(kgo.GzipCompression()), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	if err != nil {
		log.Fatal(err)
	}
	backlog := func(context.Context) int64 { return 0 }
	if *direct {
		http.HandleFunc("/v1/events", ingest(produce(producer)))
	} else {
		pool, err := pgxpool.New(ctx, *database)
		if err != nil {
			log.Fatal(err)
		}
		if _, err := pool.Exec(ctx, schema); err != nil {
			log.Fatal(err)
		}
		backlog = func(ctx context.Context) int64 {
			var n int64
			pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE NOT published`).Scan(&n)
			return n
		}
		go func() {
			for range time.Tick(*poll) {
				for {
					sent, err := publish(ctx, pool, producer, *batch)
					if err != nil {
						log.Printf("publishing: %v", err)
					}
					if sent < *batch {
						break
					}
				}
			}
		}()
		http.HandleFunc("/v1/events", ingest(insert(pool)))
	}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	http.HandleFunc("/v1/status", func(w http.ResponseWriter, r *http.Request) {
		backlog := backlog(r.Context())
		w.Header().Set("content-type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"relay": map[string]int64{"delivered_events": publishedEvents.Load(), "delivered_bytes": publishedBytes.Load()},
			"store": map[string]int64{"backlog_events": backlog},
		})
	})
	log.Printf("postgres-outbox (direct: %v) listening on %s", *direct, *listen)
	log.Fatal(http.ListenAndServe(*listen, nil))
}
