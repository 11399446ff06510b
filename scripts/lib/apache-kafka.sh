# Sourced by the measurement scripts: one Apache Kafka broker (combined broker and controller,
# KRaft) from the jars that scripts/install-test-deps fetched, on loopback.
#   start_apache_kafka WORK PORT   # listens on PORT (controller on PORT+1), data in WORK
# Sets KAFKA to its bootstrap address and KAFKA_PID to the broker's process; the caller kills it
# (pkill -f WORK) when done.
start_apache_kafka() {
  local work=$1 port=$2
  local version libs
  version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' tests/kafka/pom.xml)
  libs="${KAFKA_LIBS:-$HOME/.cache/edge-outbox/kafka-$version/libs}"
  cat > "$work/kafka.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$((port + 1))
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$((port + 1))
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$work/kafka-data
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
auto.create.topics.enable=false
PROPS
  java -cp "$libs/*" kafka.tools.StorageTool format --cluster-id ZWRnZS1vdXRib3gtdGVzdA --config "$work/kafka.properties" >/dev/null 2>&1
  java -Xmx1g -cp "$libs/*" kafka.Kafka "$work/kafka.properties" > "$work/kafka.log" 2>&1 &
  KAFKA_PID=$!
  KAFKA=127.0.0.1:$port
}

# Waits until URL answers (at most 30 s).
wait_up() {
  for _ in $(seq 1 600); do curl -sf "$1" >/dev/null && return 0; sleep 0.05; done
  echo "$1 did not answer" >&2
  exit 1
}
