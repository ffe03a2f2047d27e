function [threshold, accuracy] = lfw_best_threshold(scores, issame)
%LFW_BEST_THRESHOLD  Threshold maximising the accuracy of (score > threshold) on these pairs.
%   Candidates: min-1, midpoints of consecutive sorted unique scores, max+1; the first (lowest) of the
%   best candidates wins. Same rule, bit for bit, as best_threshold() in metrics.py.
scores = scores(:);
issame = logical(issame(:));
[u, ~, j] = unique(scores);
u = u(:);
pos = accumarray(j(:), double(issame), [numel(u) 1]);
neg = accumarray(j(:), double(~issame), [numel(u) 1]);
pos_le = [0; cumsum(pos)];
neg_le = [0; cumsum(neg)];
candidates = [u(1) - 1; (u(1:end - 1) + u(2:end)) / 2; u(end) + 1];
correct = (sum(issame) - pos_le) + neg_le;
[best, k] = max(correct);
threshold = candidates(k);
accuracy = best / numel(scores);
end
