package cn.tongban.partner;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.stream.Collectors;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.generic.GenericRecordBuilder;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.avro.message.SchemaStore;
import org.apache.kafka.clients.CommonClientConfigs;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.SaslConfigs;
import org.apache.kafka.common.config.SslConfigs;
import org.apache.kafka.common.errors.WakeupException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * A partner authority: reads its assignments from {@code tongban.partner.<id>.assignments}, accepts
 * (受理) each MatterAssigned and approves it, writing an AuthorityAcceptance and an
 * AuthorityDecision to {@code tongban.partner.<id>.decisions}.
 *
 * <p>Records are Avro single-object encoded (C3 01, CRC-64-AVRO fingerprint, body). The
 * {@link SchemaStore} is filled from the compacted topic {@code tongban.schemas}, where every writer
 * publishes its schemas, so a newer writer schema is readable as soon as it is announced.
 *
 * <p>Personal data: the applicant arrives sealed for this partner ({@code pii:v2:...}); a real
 * authority opens it with its own key to look the applicant up. This example does not: an acceptance
 * and an approving decision carry no personal field, so nothing has to be sealed on the way back.
 *
 * <pre>
 * java -jar target/tongban-partner.jar --partner 440000 [--bootstrap HOST:PORT] [--namespace PREFIX]
 *      [--secrets var/kafka/principals.secrets] [--security-protocol SASL_SSL --ca-file ca.pem]
 * </pre>
 * The password comes from {@code TONGBAN_PARTNER_PASSWORD}, else from the secrets file's line
 * {@code partner-<id>=...}.
 */
public final class PartnerAuthority {
    private static final String ACCEPTANCE = "tongban.partner.AuthorityAcceptance";
    private static final String DECISION = "tongban.partner.AuthorityDecision";
    private static final String ASSIGNED = "tongban.partner.MatterAssigned";

    private final String partner;
    private final String namespace;
    private final SchemaStore.Cache store = new SchemaStore.Cache();
    private final Map<String, Schema> latest = new HashMap<>();
    private final Map<String, BinaryMessageDecoder<GenericRecord>> decoders = new HashMap<>();
    private final Map<String, BinaryMessageEncoder<GenericRecord>> encoders = new HashMap<>();

    PartnerAuthority(String partner, String namespace) {
        this.partner = partner;
        this.namespace = namespace;
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> args = options(argv);
        String partner = required(args, "partner");
        String namespace = args.getOrDefault("namespace", env("TONGBAN_NAMESPACE", ""));
        Properties kafka = connection(args, "partner-" + partner);
        PartnerAuthority authority = new PartnerAuthority(partner, namespace);
        // Tongban's writers announce their schemas as they start: wait until the ones used here are there.
        long deadline = System.nanoTime() + Duration.ofMinutes(2).toNanos();
        while (!authority.learnSchemas(kafka)) {
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("MatterAssigned, AuthorityAcceptance or AuthorityDecision is not on "
                        + namespace + "tongban.schemas");
            }
            Thread.sleep(1000);
        }
        authority.run(kafka);
    }

    /**
     * Reads {@code tongban.schemas} from its start to its end: every writer's schemas, keyed by
     * fingerprint. True once the schemas this partner reads and writes are known.
     */
    boolean learnSchemas(Properties kafka) {
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(kafka, new ByteArrayDeserializer(),
                new ByteArrayDeserializer())) {
            String topic = namespace + "tongban.schemas";
            List<TopicPartition> partitions = consumer.partitionsFor(topic).stream()
                    .map(p -> new TopicPartition(topic, p.partition())).collect(Collectors.toList());
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);
            Map<TopicPartition, Long> ends = consumer.endOffsets(partitions);
            Map<String, Integer> versions = new HashMap<>();
            while (partitions.stream().anyMatch(tp -> consumer.position(tp) < ends.get(tp))) {
                for (ConsumerRecord<byte[], byte[]> record : consumer.poll(Duration.ofMillis(500))) {
                    if (record.value() == null) {
                        continue; // a tombstone
                    }
                    // Each value is self-contained (components inlined), so each gets its own parser.
                    Schema schema = new Schema.Parser().parse(new String(record.value(), StandardCharsets.UTF_8));
                    store.addSchema(schema);
                    Object version = schema.getObjectProp("version");
                    int number = version instanceof Number n ? n.intValue() : 0;
                    if (number >= versions.getOrDefault(schema.getFullName(), -1)) {
                        versions.put(schema.getFullName(), number);
                        latest.put(schema.getFullName(), schema);
                    }
                }
            }
        }
        System.err.printf("partner-%s: %d schemas known%n", partner, latest.size());
        return latest.keySet().containsAll(List.of(ASSIGNED, ACCEPTANCE, DECISION));
    }

    void run(Properties kafka) {
        Properties consumerProps = new Properties();
        consumerProps.putAll(kafka);
        consumerProps.put(ConsumerConfig.GROUP_ID_CONFIG, namespace + "partner-" + partner);
        consumerProps.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed"); // only committed events are facts
        consumerProps.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        consumerProps.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        Properties producerProps = new Properties();
        producerProps.putAll(kafka);
        producerProps.put(ProducerConfig.ACKS_CONFIG, "all");
        producerProps.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        String assignments = namespace + "tongban.partner." + partner + ".assignments";
        String decisions = namespace + "tongban.partner." + partner + ".decisions";
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(consumerProps, new ByteArrayDeserializer(),
                new ByteArrayDeserializer());
             KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(producerProps, new ByteArraySerializer(),
                     new ByteArraySerializer())) {
            Thread main = Thread.currentThread();
            Runtime.getRuntime().addShutdownHook(new Thread(() -> {
                consumer.wakeup();
                try {
                    main.join(10_000);
                } catch (InterruptedException ignored) {
                    Thread.currentThread().interrupt();
                }
            }));
            consumer.subscribe(List.of(assignments));
            System.err.printf("partner-%s: reading %s%n", partner, assignments);
            while (true) {
                ConsumerRecords<byte[], byte[]> batch = consumer.poll(Duration.ofMillis(500));
                for (ConsumerRecord<byte[], byte[]> record : batch) {
                    if (record.value() != null && record.value().length >= 10 && store.findByFingerprint(
                            ByteBuffer.wrap(record.value(), 2, 8).order(ByteOrder.LITTLE_ENDIAN).getLong()) == null) {
                        learnSchemas(kafka); // a writer's newer schema, announced on tongban.schemas
                    }
                    for (GenericRecord reply : answer(record.value())) {
                        ProducerRecord<byte[], byte[]> out = new ProducerRecord<>(decisions, record.key(),
                                encode(reply));
                        // The application's trace continues across systems.
                        Header traceparent = record.headers().lastHeader("traceparent");
                        if (traceparent != null) {
                            out.headers().add("traceparent", traceparent.value());
                        }
                        producer.send(out);
                    }
                }
                if (!batch.isEmpty()) {
                    // Offsets only after the answers are on the broker: a crash answers again, with the
                    // same event ids, which Tongban recognises as duplicates.
                    producer.flush();
                    consumer.commitSync();
                }
            }
        } catch (WakeupException stopping) {
            System.err.printf("partner-%s: stopped%n", partner);
        }
    }

    /** The replies to one record: acceptance and approval for a MatterAssigned, nothing otherwise. */
    List<GenericRecord> answer(byte[] value) {
        if (value == null || value.length < 10) {
            System.err.printf("partner-%s: skipped a record too short for a single-object encoding%n", partner);
            return List.of();
        }
        long fingerprint = ByteBuffer.wrap(value, 2, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        Schema writer = store.findByFingerprint(fingerprint);
        if (value[0] != (byte) 0xC3 || value[1] != 0x01 || writer == null) {
            System.err.printf("partner-%s: skipped a record that is not a known single-object encoding%n", partner);
            return List.of();
        }
        String type = writer.getFullName();
        if (!ASSIGNED.equals(type)) {
            // AssignmentCancelled: the work stops. CommitmentCheckRequested and MaterialsSupplemented
            // need a substantive review; this example leaves them to the operator's console.
            System.err.printf("partner-%s: no automatic answer to %s%n", partner, type);
            return List.of();
        }
        GenericRecord assigned;
        try {
            assigned = decoders.computeIfAbsent(type,
                    t -> new BinaryMessageDecoder<>(GenericData.get(), latest.get(t), store)).decode(value);
        } catch (IOException e) {
            System.err.printf("partner-%s: could not decode a %s (%s)%n", partner, type, e.getClass().getSimpleName());
            return List.of();
        }
        GenericRecord cause = (GenericRecord) assigned.get("envelope");
        String assignmentId = assigned.get("assignment_id").toString();
        String applicationId = assigned.get("application_id").toString();
        long now = System.currentTimeMillis();
        GenericRecord accepted = new GenericRecordBuilder(latest.get(ACCEPTANCE))
                .set("envelope", envelope(ACCEPTANCE, cause, now))
                .set("assignment_id", assignmentId).set("application_id", applicationId)
                .set("outcome", "ACCEPTED").set("accepted_at", now)
                .build();
        // The authority's own reference for the result: its e-licence library's id.
        String serial = UUID.nameUUIDFromBytes(assignmentId.getBytes(StandardCharsets.UTF_8)).toString()
                .replace("-", "").substring(0, 12).toUpperCase(Locale.ROOT);
        GenericRecord decided = new GenericRecordBuilder(latest.get(DECISION))
                .set("envelope", envelope(DECISION, cause, now))
                .set("assignment_id", assignmentId).set("application_id", applicationId)
                .set("outcome", "APPROVED").set("result_reference", "EL-" + partner + "-" + serial)
                .set("decided_at", now)
                .build();
        System.err.printf("partner-%s: accepted and approved assignment %s%n", partner, assignmentId);
        return List.of(accepted, decided);
    }

    /** The envelope of a reply; its id derives from the record answered, so a resend is the same fact. */
    GenericRecord envelope(String type, GenericRecord cause, long now) {
        Schema schema = latest.get(type);
        String causeId = cause.get("event_id").toString();
        return new GenericRecordBuilder(schema.getField("envelope").schema())
                .set("event_id", UUID.nameUUIDFromBytes((causeId + "|" + type).getBytes(StandardCharsets.UTF_8))
                        .toString())
                .set("event_type", type)
                .set("schema_version", ((Number) schema.getObjectProp("version")).intValue())
                .set("occurred_at", now)
                .set("source_system", "partner-" + partner)
                .set("source_partner", partner)
                .set("correlation_id", cause.get("correlation_id").toString())
                .set("causation_id", causeId)
                .build();
    }

    byte[] encode(GenericRecord record) {
        String type = record.getSchema().getFullName();
        try {
            return encoders.computeIfAbsent(type, t -> new BinaryMessageEncoder<>(GenericData.get(), latest.get(t)))
                    .encode(record).array();
        } catch (IOException e) {
            throw new IllegalStateException("could not encode a " + type, e);
        }
    }

    /** SCRAM-SHA-512 as {@code partner-<id>}: SASL_PLAINTEXT on a local broker, SASL_SSL in production. */
    static Properties connection(Map<String, String> args, String principal) throws IOException {
        String password = env("TONGBAN_PARTNER_PASSWORD", "");
        if (password.isEmpty()) {
            password = secret(Path.of(args.getOrDefault("secrets", "var/kafka/principals.secrets")), principal);
        }
        Properties props = new Properties();
        props.put(CommonClientConfigs.BOOTSTRAP_SERVERS_CONFIG,
                args.getOrDefault("bootstrap", env("TONGBAN_KAFKA_BOOTSTRAP", "127.0.0.1:19092")));
        props.put(CommonClientConfigs.CLIENT_ID_CONFIG, principal);
        String protocol = args.getOrDefault("security-protocol", "SASL_PLAINTEXT");
        props.put(CommonClientConfigs.SECURITY_PROTOCOL_CONFIG, protocol);
        props.put(SaslConfigs.SASL_MECHANISM, "SCRAM-SHA-512");
        props.put(SaslConfigs.SASL_JAAS_CONFIG, String.format(
                "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"%s\" password=\"%s\";",
                principal, password));
        if ("SASL_SSL".equals(protocol)) {
            props.put(SslConfigs.SSL_TRUSTSTORE_TYPE_CONFIG, "PEM"); // the cluster CA handed over at onboarding
            props.put(SslConfigs.SSL_TRUSTSTORE_LOCATION_CONFIG, required(args, "ca-file"));
        }
        return props;
    }

    static String secret(Path file, String principal) throws IOException {
        for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
            if (line.startsWith(principal + "=")) {
                return line.substring(principal.length() + 1).trim();
            }
        }
        throw new IllegalArgumentException("no secret for " + principal + " in " + file);
    }

    static Map<String, String> options(String[] argv) {
        Map<String, String> args = new HashMap<>();
        List<String> rest = new ArrayList<>(List.of(argv));
        while (rest.size() >= 2 && rest.get(0).startsWith("--")) {
            args.put(rest.remove(0).substring(2), rest.remove(0));
        }
        if (!rest.isEmpty()) {
            throw new IllegalArgumentException("expected --name value pairs, left over: " + rest);
        }
        return args;
    }

    static String required(Map<String, String> args, String name) {
        String value = args.get(name);
        if (value == null || value.isEmpty()) {
            throw new IllegalArgumentException("--" + name + " is required");
        }
        return value;
    }

    static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isEmpty() ? fallback : value;
    }
}
