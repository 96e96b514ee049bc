package dev.crucible.serve;

import java.util.List;

/**
 * Server limits and identity.
 *
 * @param modelName       the id /v1/models lists and responses carry
 * @param apiKeys         accepted bearer tokens; empty = no authentication
 * @param maxRequestBytes largest request body (413 beyond)
 * @param maxPromptTokens longest prompt in tokens (400 beyond; the context bounds it too)
 * @param maxTokens       largest max_tokens a request may ask for
 * @param maxConcurrent   generation requests handled at once (429 beyond)
 * @param maxN            largest n
 * @param retryAfterSeconds the Retry-After of a 429
 */
public record ServerConfig(String host, int port, String modelName, List<String> apiKeys, long maxRequestBytes,
                           int maxPromptTokens, int maxTokens, int maxConcurrent, int maxN, int retryAfterSeconds) {
    public ServerConfig {
        apiKeys = List.copyOf(apiKeys);
        if (maxRequestBytes <= 0 || maxPromptTokens <= 0 || maxTokens <= 0 || maxConcurrent <= 0 || maxN <= 0) {
            throw new IllegalArgumentException("server limits must be positive");
        }
    }

    public static ServerConfig defaults(String modelName) {
        return new ServerConfig("127.0.0.1", 8080, modelName, List.of(), 1 << 20, 8192, 4096, 64, 8, 1);
    }

    public ServerConfig withPort(int p) {
        return new ServerConfig(host, p, modelName, apiKeys, maxRequestBytes, maxPromptTokens, maxTokens, maxConcurrent, maxN, retryAfterSeconds);
    }

    public ServerConfig withApiKeys(List<String> keys) {
        return new ServerConfig(host, port, modelName, keys, maxRequestBytes, maxPromptTokens, maxTokens, maxConcurrent, maxN, retryAfterSeconds);
    }

    public ServerConfig withLimits(long requestBytes, int promptTokens, int tokens, int concurrent) {
        return new ServerConfig(host, port, modelName, apiKeys, requestBytes, promptTokens, tokens, concurrent, maxN, retryAfterSeconds);
    }
}
