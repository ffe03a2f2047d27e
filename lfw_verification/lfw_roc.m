function [fpr, tpr, auc_value, eer] = lfw_roc(scores, issame)
%LFW_ROC  ROC points (one per distinct score, from (0,0)), trapezoid AUC and the equal error rate.
%   EER: where the ROC polyline crosses FPR = 1 - TPR (linear interpolation), as in metrics.py.
scores = scores(:);
issame = logical(issame(:));
[sorted_scores, order] = sort(scores, 'descend');
y = issame(order);
tp = cumsum(double(y));
fp = cumsum(double(~y));
last = [find(diff(sorted_scores) ~= 0); numel(scores)];
tpr = [0; tp(last) / sum(issame)];
fpr = [0; fp(last) / sum(~issame)];
auc_value = trapz(fpr, tpr);
gap = fpr + tpr - 1;
i = find(gap >= 0, 1);
if gap(i) == 0 || i == 1
    eer = fpr(i);
else
    t = -gap(i - 1) / (gap(i) - gap(i - 1));
    eer = fpr(i - 1) + t * (fpr(i) - fpr(i - 1));
end
end
