package cn.tongban.partner;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageEncoder;

/**
 * Checks Apache Avro's encoder against the partner kit's test vectors: for every
 * {@code <Event>.v<N>.avsc} it builds the record of {@code <Event>.v<N>.json}, encodes it with
 * {@link BinaryMessageEncoder} and compares the bytes with {@code <Event>.v<N>.hex}.
 *
 * <pre>java -cp target/tongban-partner.jar cn.tongban.partner.VectorCheck ../vectors</pre>
 * Exits 1 when any vector differs.
 */
public final class VectorCheck {
    private VectorCheck() {
    }

    public static void main(String[] argv) throws IOException {
        Path dir = Path.of(argv.length > 0 ? argv[0] : "docs/partner-kit/vectors");
        List<Path> schemas;
        try (Stream<Path> files = Files.list(dir)) {
            schemas = files.filter(p -> p.toString().endsWith(".avsc")).sorted().toList();
        }
        ObjectMapper json = new ObjectMapper();
        List<String> differing = new ArrayList<>();
        for (Path file : schemas) {
            String stem = file.getFileName().toString().replaceFirst("\\.avsc$", "");
            Schema schema = new Schema.Parser().parse(Files.readString(file, StandardCharsets.UTF_8));
            Object record = datum(schema, json.readTree(dir.resolve(stem + ".json").toFile()));
            byte[] mine = new BinaryMessageEncoder<GenericRecord>(GenericData.get(), schema)
                    .encode((GenericRecord) record).array();
            String expected = Files.readString(dir.resolve(stem + ".hex"), StandardCharsets.US_ASCII).strip();
            boolean same = HexFormat.of().formatHex(mine).equals(expected);
            System.out.printf("%s %s%n", same ? "same" : "DIFFERS", stem);
            if (!same) {
                differing.add(stem);
            }
        }
        System.out.printf("%d vectors, %d differ%n", schemas.size(), differing.size());
        if (schemas.isEmpty() || !differing.isEmpty()) {
            System.exit(1);
        }
    }

    /** The vectors' JSON: union values bare (the branch is the one the value fits), timestamps as longs. */
    static Object datum(Schema schema, JsonNode node) {
        switch (schema.getType()) {
            case RECORD -> {
                GenericData.Record record = new GenericData.Record(schema);
                for (Schema.Field field : schema.getFields()) {
                    record.put(field.pos(), datum(field.schema(), node.get(field.name())));
                }
                return record;
            }
            case UNION -> {
                for (Schema branch : schema.getTypes()) {
                    if (fits(branch, node)) {
                        return datum(branch, node);
                    }
                }
                throw new IllegalArgumentException("no branch of " + schema + " fits " + node.getNodeType());
            }
            case ARRAY -> {
                List<Object> items = new ArrayList<>();
                node.forEach(item -> items.add(datum(schema.getElementType(), item)));
                return items;
            }
            case MAP -> {
                Map<String, Object> entries = new LinkedHashMap<>();
                node.properties().forEach(e -> entries.put(e.getKey(), datum(schema.getValueType(), e.getValue())));
                return entries;
            }
            case ENUM -> {
                return new GenericData.EnumSymbol(schema, node.asText());
            }
            case STRING -> {
                return node.asText();
            }
            case INT -> {
                return node.asInt();
            }
            case LONG -> {
                return node.asLong();
            }
            case BOOLEAN -> {
                return node.asBoolean();
            }
            case DOUBLE -> {
                return node.asDouble();
            }
            case FLOAT -> {
                return (float) node.asDouble();
            }
            case NULL -> {
                return null;
            }
            default -> throw new IllegalArgumentException("no JSON form for " + schema.getType());
        }
    }

    static boolean fits(Schema branch, JsonNode node) {
        return switch (branch.getType()) {
            case NULL -> node == null || node.isNull();
            case STRING, ENUM -> node != null && node.isTextual();
            case INT, LONG -> node != null && node.isIntegralNumber();
            case FLOAT, DOUBLE -> node != null && node.isNumber();
            case BOOLEAN -> node != null && node.isBoolean();
            case ARRAY -> node != null && node.isArray();
            case MAP, RECORD -> node != null && node.isObject();
            default -> false;
        };
    }
}
