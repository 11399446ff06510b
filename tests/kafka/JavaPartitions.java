// Kafka's own Java producer (kafka-clients, default partitioner) sends one record per key to
// TOPIC and prints "key<TAB>partition" as the broker acknowledged it: what the sidecar's
// partitions are compared with. Usage: java JavaPartitions BOOTSTRAP TOPIC KEY...
import java.util.Properties;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.StringSerializer;

public class JavaPartitions {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("key.serializer", StringSerializer.class.getName());
        props.put("value.serializer", StringSerializer.class.getName());
        props.put("acks", "all");
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            for (int i = 2; i < args.length; i++) {
                RecordMetadata meta = producer.send(new ProducerRecord<>(args[1], args[i], "java")).get();
                System.out.println(args[i] + "\t" + meta.partition());
            }
        }
    }
}
