function result = lfw_eval(features_file, pairs_file)
%LFW_EVAL  LFW verification in GNU Octave or MATLAB: 10-fold ACC, EER, AUC from a features .mat + pairs.
%   result = lfw_eval('LFW_features.mat', 'pairs.txt')
%   The .mat holds data (N x D) and label (N x 1 cell of 'Name/Name_0001.jpg'); the pairs file is the
%   official LFW pairs.txt or the seed's pair.label. Cosine similarity, rounded to 12 decimals; a pair is
%   'same' when score > threshold. Each fold's threshold is fitted on the other folds (lfw_best_threshold),
%   folds in file order. Gives the same numbers as python lfw_verification/lfw_eval.py.
%   From a shell:
%     octave-cli --eval "addpath('lfw_verification'); lfw_eval('LFW_features.mat', 'pairs.txt');"
%     matlab -batch "addpath('lfw_verification'); lfw_eval('LFW_features.mat', 'pairs.txt');"
S = load(features_file);
if ~isfield(S, 'data') || ~isfield(S, 'label')
    error('lfw_eval:mat', '%s must hold data (N x D) and label (N x 1 cell)', features_file);
end
labels = S.label;
if ischar(labels)
    labels = cellstr(labels);
end
labels = labels(:);
data = double(S.data);
if size(data, 1) ~= numel(labels)
    error('lfw_eval:mat', '%s: data has %d rows but label has %d entries', features_file, size(data, 1), numel(labels));
end

[path1, path2, issame, fold] = lfw_read_pairs(pairs_file);
label_keys = lfw_image_key(labels);
if numel(unique(label_keys)) < numel(label_keys)
    error('lfw_eval:labels', '%s: some labels name the same image (identity/file)', features_file);
end
[found1, idx1] = ismember(lfw_image_key(path1), label_keys);
[found2, idx2] = ismember(lfw_image_key(path2), label_keys);
if ~all(found1) || ~all(found2)
    missing = unique([path1(~found1); path2(~found2)]);
    error('lfw_eval:missing', '%d images named by the pairs are not in the features file, e.g. %s', ...
        numel(missing), strjoin(missing(1:min(5, numel(missing)))', ', '));
end

norms = sqrt(sum(data .^ 2, 2));
unit = bsxfun(@rdivide, data, max(norms, 1e-12));
scores = sum(unit(idx1, :) .* unit(idx2, :), 2);
scores = round(scores * 1e12) / 1e12;

fold_ids = unique(fold);
fold_acc = nan(numel(fold_ids), 1);
fold_threshold = nan(numel(fold_ids), 1);
if numel(fold_ids) >= 2
    for k = 1:numel(fold_ids)
        test = fold == fold_ids(k);
        fold_threshold(k) = lfw_best_threshold(scores(~test), issame(~test));
        fold_acc(k) = mean(double((scores(test) > fold_threshold(k)) == issame(test)));
    end
end
[optimistic_threshold, optimistic_acc] = lfw_best_threshold(scores, issame);
[fpr, tpr, auc_value, eer] = lfw_roc(scores, issame);

result = struct('acc_mean', mean(fold_acc), 'acc_std', std(fold_acc, 1), 'fold_acc', fold_acc, ...
    'fold_threshold', fold_threshold, 'optimistic_acc', optimistic_acc, ...
    'optimistic_threshold', optimistic_threshold, 'eer', eer, 'auc', auc_value, ...
    'fpr', fpr, 'tpr', tpr, 'scores', scores, 'issame', issame, 'fold', fold);

fprintf('pairs                    %d (%d same, %d different), %d folds\n', numel(issame), sum(issame), ...
    sum(~issame), numel(fold_ids));
fprintf('ACC (%d-fold)             %.2f%% +- %.2f%%\n', numel(fold_ids), 100 * result.acc_mean, 100 * result.acc_std);
fprintf('best-threshold ACC       %.2f%% (optimistic: threshold fitted on test pairs)\n', 100 * optimistic_acc);
fprintf('EER / 100%%-EER           %.2f%% / %.2f%%\n', 100 * eer, 100 * (1 - eer));
fprintf('AUC                      %.3f%%\n', 100 * auc_value);
end
