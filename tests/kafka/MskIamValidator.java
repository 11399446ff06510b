// A broker-side check of the MSK IAM handshake, for the tests: Kafka's SASL/OAUTHBEARER server
// callback, accepting only a token that is a base64url SigV4-presigned
// `GET https://kafka.<region>.amazonaws.com/?Action=kafka-cluster:Connect`, signed with the
// credentials and region given as JAAS options (accessKeyId, secretAccessKey, region), and not
// expired. It re-derives the signature the way AWS does; Amazon MSK does this check itself.
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import javax.security.auth.callback.Callback;
import javax.security.auth.callback.UnsupportedCallbackException;
import javax.security.auth.login.AppConfigurationEntry;
import org.apache.kafka.common.security.auth.AuthenticateCallbackHandler;
import org.apache.kafka.common.security.oauthbearer.OAuthBearerToken;
import org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallback;

public class MskIamValidator implements AuthenticateCallbackHandler {
    private String accessKeyId;
    private String secretAccessKey;
    private String region;

    @Override
    public void configure(Map<String, ?> configs, String mechanism, List<AppConfigurationEntry> entries) {
        Map<String, ?> options = entries.get(0).getOptions();
        accessKeyId = (String) options.get("accessKeyId");
        secretAccessKey = (String) options.get("secretAccessKey");
        region = (String) options.get("region");
    }

    @Override
    public void handle(Callback[] callbacks) throws UnsupportedCallbackException {
        for (Callback callback : callbacks) {
            if (!(callback instanceof OAuthBearerValidatorCallback)) {
                throw new UnsupportedCallbackException(callback);
            }
            OAuthBearerValidatorCallback validation = (OAuthBearerValidatorCallback) callback;
            try {
                validation.token(validate(validation.tokenValue()));
            } catch (Exception e) {
                System.err.println("MSK IAM token refused: " + e.getMessage());
                validation.error("invalid_token", null, null);
            }
        }
    }

    private OAuthBearerToken validate(String token) throws Exception {
        String url = new String(Base64.getUrlDecoder().decode(token), StandardCharsets.UTF_8);
        String host = "kafka." + region + ".amazonaws.com";
        String prefix = "https://" + host + "/?";
        if (!url.startsWith(prefix)) throw new Exception("not a presigned URL for " + host);
        Map<String, String> params = new TreeMap<>();
        for (String pair : url.substring(prefix.length()).split("&")) {
            int eq = pair.indexOf('=');
            params.put(URLDecoder.decode(pair.substring(0, eq), StandardCharsets.UTF_8),
                       URLDecoder.decode(pair.substring(eq + 1), StandardCharsets.UTF_8));
        }
        if (!"kafka-cluster:Connect".equals(params.get("Action"))) throw new Exception("not kafka-cluster:Connect");
        if (!"AWS4-HMAC-SHA256".equals(params.get("X-Amz-Algorithm"))) throw new Exception("not SigV4");
        if (!"host".equals(params.get("X-Amz-SignedHeaders"))) throw new Exception("signed headers are not host");
        String amzDate = params.get("X-Amz-Date");
        String date = amzDate.substring(0, 8);
        String scope = date + "/" + region + "/kafka-cluster/aws4_request";
        if (!(accessKeyId + "/" + scope).equals(params.get("X-Amz-Credential"))) throw new Exception("wrong credential scope");
        Instant signedAt = DateTimeFormatter.ofPattern("yyyyMMdd'T'HHmmss'Z'").withZone(ZoneOffset.UTC)
            .parse(amzDate, Instant::from);
        long expiresMs = signedAt.toEpochMilli() + Long.parseLong(params.get("X-Amz-Expires")) * 1000;
        if (expiresMs < System.currentTimeMillis()) throw new Exception("expired");
        if (signedAt.toEpochMilli() > System.currentTimeMillis() + 300_000) throw new Exception("signed in the future");
        List<String> canonical = new ArrayList<>();
        TreeMap<String, String> signed = new TreeMap<>();
        for (Map.Entry<String, String> p : params.entrySet()) {
            if (p.getKey().equals("X-Amz-Signature") || p.getKey().equals("User-Agent")) continue;
            signed.put(encode(p.getKey()), encode(p.getValue()));
        }
        for (Map.Entry<String, String> p : signed.entrySet()) canonical.add(p.getKey() + "=" + p.getValue());
        String request = "GET\n/\n" + String.join("&", canonical) + "\nhost:" + host + "\n\nhost\n" + hex(sha256(""));
        String toSign = "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex(sha256(request));
        byte[] key = ("AWS4" + secretAccessKey).getBytes(StandardCharsets.UTF_8);
        for (String part : new String[] {date, region, "kafka-cluster", "aws4_request"}) key = hmac(key, part);
        String expected = hex(hmac(key, toSign));
        if (!MessageDigest.isEqual(expected.getBytes(StandardCharsets.UTF_8),
                                   params.get("X-Amz-Signature").getBytes(StandardCharsets.UTF_8))) {
            throw new Exception("signature mismatch");
        }
        final long issued = signedAt.toEpochMilli();
        return new OAuthBearerToken() {
            public String value() { return token; }
            public Set<String> scope() { return Collections.emptySet(); }
            public long lifetimeMs() { return expiresMs; }
            public String principalName() { return accessKeyId; }
            public Long startTimeMs() { return issued; }
        };
    }

    private static String encode(String value) {
        StringBuilder out = new StringBuilder();
        for (byte b : value.getBytes(StandardCharsets.UTF_8)) {
            char c = (char) (b & 0xff);
            if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
                    || c == '-' || c == '_' || c == '.' || c == '~') {
                out.append(c);
            } else {
                out.append(String.format("%%%02X", b & 0xff));
            }
        }
        return out.toString();
    }

    private static byte[] sha256(String s) throws Exception {
        return MessageDigest.getInstance("SHA-256").digest(s.getBytes(StandardCharsets.UTF_8));
    }

    private static byte[] hmac(byte[] key, String data) throws Exception {
        Mac mac = Mac.getInstance("HmacSHA256");
        mac.init(new SecretKeySpec(key, "HmacSHA256"));
        return mac.doFinal(data.getBytes(StandardCharsets.UTF_8));
    }

    private static String hex(byte[] bytes) {
        StringBuilder out = new StringBuilder();
        for (byte b : bytes) out.append(String.format("%02x", b));
        return out.toString();
    }

    @Override
    public void close() {}
}
